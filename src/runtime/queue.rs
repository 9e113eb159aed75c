//! A queue thread's loop ([`queue_loop`]): read a batch from its NFQUEUE
//! socket, decide each packet here or hand it to the resolver workers, send
//! the verdicts (batched, or one marking verdict each in flow mode), and at
//! shutdown answer every packet already queued before unbinding.

use super::pool::{Answer, Pool};
use crate::counters::Counters;
use crate::engine::{Engine, Scratch};
use crate::labels::QueueMeta;
use crate::policy::Verdict;
use crate::sys::nfqueue::{self, KernelQueueStats, QueueSocket};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Copy, Debug)]
pub struct LoopOpts {
    pub batch: usize,
    pub flow: bool,
}

/// Read what is waiting (up to `batch`), decide (or, with a pool, send to
/// the workers), and send the verdicts decided here, grouping runs of equal
/// verdicts into batch verdicts when nothing is at the workers (flow mode:
/// one marking verdict each). Returns how many packets were read.
fn service(
    sock: &mut QueueSocket,
    engine: &Engine,
    scratch: &mut Scratch,
    opts: LoopOpts,
    out: &mut Vec<Answer>,
    mut pool: Option<&mut Pool>,
    wait: bool,
) -> std::io::Result<usize> {
    let c = &engine.counters;
    out.clear();
    let n = sock.recv(
        opts.batch,
        wait,
        |p, received| {
            let meta = QueueMeta {
                hook: p.hook,
                uid: p.uid,
                gid: p.gid,
                secctx: p.secctx.map(str::to_string),
                indev: p.indev,
                outdev: p.outdev,
                mark: p.mark,
                cap_len: p.cap_len,
                received: Some(received),
            };
            let verdict = match pool.as_deref_mut() {
                None => Some(engine.handle(p.payload, &meta, scratch)),
                Some(pool) => pool.submit(engine, p.id, p.payload, meta, scratch),
            };
            if let Some(verdict) = verdict {
                out.push(Answer { id: p.id, verdict, mark: p.mark, input_settled: scratch.take_input_settled() });
            }
        },
        |e| {
            // A message without a packet id cannot be answered; the kernel
            // keeps that packet until the queue is unbound. Count it loudly.
            Counters::bump(&c.recv_errors);
            log::error!("unreadable queue message: {e}");
        },
    )?;
    // A batch verdict covers every id up to its last: only safe when no
    // earlier packet is still at a worker.
    let batch = !pool.is_some_and(|p| p.busy());
    send_answers(sock, out, c, opts.flow, batch);
    Ok(n)
}

fn send_answers(sock: &mut QueueSocket, answers: &[Answer], c: &Counters, flow: bool, batch: bool) {
    if flow {
        send_flow_verdicts(sock, answers, c);
    } else {
        send_verdicts(sock, answers, c, batch);
    }
}

fn to_kernel(v: Verdict) -> nfqueue::Verdict {
    match v {
        Verdict::Accept => nfqueue::Verdict::Accept,
        Verdict::Drop => nfqueue::Verdict::Drop,
    }
}

/// Send verdicts in order. With `batch`, a run of equal verdicts becomes one
/// batch verdict (it covers every id up to the last of the run, and every
/// earlier id was answered before the run started: the caller vouches for
/// that); without, each packet gets its own.
fn send_verdicts(sock: &mut QueueSocket, answers: &[Answer], c: &Counters, batch: bool) {
    let mut i = 0;
    while let Some(&Answer { id: first_id, verdict: v, .. }) = answers.get(i) {
        let mut j = i + 1;
        while batch && answers.get(j).is_some_and(|a| a.verdict == v) {
            j += 1;
        }
        let last_id = answers.get(j - 1).map_or(first_id, |a| a.id);
        let res = if j - i == 1 {
            sock.verdict(first_id, to_kernel(v), None, None)
        } else {
            sock.verdict_batch(last_id, to_kernel(v), None)
        };
        if let Err(e) = res {
            for _ in i..j {
                Counters::bump(&c.verdict_errors);
            }
            log::error!("verdict for packets {first_id}..={last_id} failed: {e}");
        }
        i = j;
    }
}

/// Flow mode (the repeat-mark technique): an accepted packet goes back
/// through its hook (NF_REPEAT) carrying the accept bit in its mark; the
/// rules from `labelgate rules --flow` turn that bit into the hook's own
/// connection mark bit and let the packet pass, so the rest of the
/// connection never reaches the queue at that hook. A packet whose INPUT
/// decision the engine settled at OUTPUT also carries
/// [`FLOW_MARK_SETTLED`](crate::rules::FLOW_MARK_SETTLED): the OUTPUT chain
/// then sets INPUT's bit too. A packet that comes back to the queue with
/// flow bits still in its mark met rules that do not know the settled bit
/// (an older rule set): it is answered with the accept bit alone. A
/// dropped packet is simply dropped.
fn send_flow_verdicts(sock: &mut QueueSocket, answers: &[Answer], c: &Counters) {
    use crate::rules::{FLOW_MARK_ACCEPT, FLOW_MARK_MASK};
    for a in answers {
        let res = match a.verdict {
            Verdict::Accept => {
                let settled = a.input_settled && a.mark & FLOW_MARK_MASK == 0;
                let bits = if settled { FLOW_MARK_ACCEPT | crate::rules::FLOW_MARK_SETTLED } else { FLOW_MARK_ACCEPT };
                let mark = (a.mark & !FLOW_MARK_MASK) | bits;
                sock.verdict(a.id, nfqueue::Verdict::Repeat, Some(mark), None)
            }
            Verdict::Drop => sock.verdict(a.id, nfqueue::Verdict::Drop, None, None),
        };
        if let Err(e) = res {
            Counters::bump(&c.verdict_errors);
            log::error!("verdict for packet {} failed: {e}", a.id);
        }
    }
}

pub fn queue_loop(mut sock: QueueSocket, engine: &Engine, stop: &AtomicBool, opts: LoopOpts, mut pool: Option<Pool>) {
    let q = sock.queue();
    let c = &engine.counters;
    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(opts.batch);
    let mut handled: u64 = 0;
    // Without workers there is nothing but the queue to wait for: the first
    // read of a batch blocks (up to 100 ms, to see `stop`), and an idle
    // thread's wake-up costs one system call instead of a poll and a read.
    let blocking = pool.is_none()
        && sock
            .set_wait_timeout(std::time::Duration::from_millis(100))
            .map_err(|e| log::warn!("queue {q}: no receive timeout ({e}); waiting with poll"))
            .is_ok();
    while !stop.load(Ordering::Relaxed) {
        let ready = match &pool {
            None if blocking => Ok((true, false)),
            None => crate::sys::poll_readable(sock.fd(), 100).map(|r| (r, false)),
            Some(p) => crate::sys::poll_either(sock.fd(), p.wake().fd(), 100),
        };
        match ready {
            Ok((sock_ready, woken)) => {
                if let Some(p) = pool.as_mut().filter(|_| woken) {
                    answer_done(&mut sock, p, c, opts, &mut out);
                }
                if !sock_ready {
                    continue;
                }
            }
            Err(e) => {
                log::error!("queue {q}: poll failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        }
        match service(&mut sock, engine, &mut scratch, opts, &mut out, pool.as_mut(), blocking) {
            Ok(n) => handled += n as u64,
            Err(e) => {
                Counters::bump(&c.recv_errors);
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    log::warn!("queue {q}: socket receive buffer overran; the kernel counted the packets it could not deliver (see /proc/net/netfilter/nfnetlink_queue)");
                } else {
                    log::error!("queue {q}: receive failed: {e}");
                }
            }
        }
    }
    // Stop taking new packets, then answer everything already queued: read
    // until nothing is left, waiting for the workers' results in between.
    if let Err(e) = sock.set_max_len(0) {
        log::error!("queue {q}: cannot close the queue to new packets: {e}");
    }
    if let Some(p) = pool.as_ref().filter(|p| p.busy()) {
        log::info!("queue {q}: {} packets still at resolver workers", p.in_flight());
    }
    loop {
        match service(&mut sock, engine, &mut scratch, opts, &mut out, pool.as_mut(), false) {
            Ok(0) => match pool.as_mut().filter(|p| p.busy()) {
                Some(p) => wait_for_workers(&mut sock, p, c, opts, &mut out),
                None => break,
            },
            Ok(n) => handled += n as u64,
            Err(e) => {
                log::error!("queue {q}: receive failed during shutdown: {e}");
                break;
            }
        }
    }
    // (After a receive error the loop above may have left packets at workers.)
    while let Some(p) = pool.as_mut().filter(|p| p.busy()) {
        wait_for_workers(&mut sock, p, c, opts, &mut out);
    }
    // Every packet the kernel queued has now been answered: its id sequence
    // should equal the packets this thread handled.
    match KernelQueueStats::read(q) {
        Some(k) => log::info!(
            "queue {q}: kernel id_sequence={} queue_dropped={} user_dropped={} waiting={}; labelgate answered {handled}",
            k.id_sequence,
            k.queue_dropped,
            k.user_dropped,
            k.waiting
        ),
        None => log::warn!("queue {q}: kernel queue statistics unavailable; labelgate answered {handled}"),
    }
    if let Err(e) = sock.unbind() {
        log::error!("queue {q}: unbind failed: {e}");
    }
    log::info!("queue {q}: stopped");
}

/// Send the verdicts of every result the workers have sent back, one each,
/// in the order they arrived.
fn answer_done(sock: &mut QueueSocket, pool: &mut Pool, c: &Counters, opts: LoopOpts, out: &mut Vec<Answer>) {
    out.clear();
    pool.drain(out);
    send_answers(sock, out, c, opts.flow, false);
}

/// Wait (up to 100 ms) for a worker's wake-up, then answer what came back.
fn wait_for_workers(sock: &mut QueueSocket, pool: &mut Pool, c: &Counters, opts: LoopOpts, out: &mut Vec<Answer>) {
    if let Err(e) = crate::sys::poll_readable(pool.wake().fd(), 100) {
        log::error!("queue {}: poll failed: {e}", sock.queue());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    answer_done(sock, pool, c, opts, out);
}
