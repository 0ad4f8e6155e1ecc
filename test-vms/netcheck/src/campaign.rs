//! netcheck's campaign mode (issue 16): the checked exchange run for a
//! fault-injection campaign, which injects faults into the components
//! between the two VMs (the network bridge, the interrupt forwarder, the
//! QoS controller) and decides from the VMs' console lines whether the
//! workload went on.
//!
//! Both VMs of a pair boot as multiboot kernels with `campaign=1` on their
//! command lines; they find each other as in the default run (the lower
//! MAC pings). The pinger sends the default run's PINGs (sequence
//! numbers from 1, 46..=1500 bytes of payload with an FNV-1a checksum)
//! one at a time without end — or, with `frames=N`, N of them and then
//! DONE — each carrying this boot's nonce in its flags byte, and resends
//! a PING that got no echo within the default run's [`ECHO_TIMEOUT_MS`]:
//! frames in flight are lost when the bridge restarts, which is no
//! breakage. The echoer checks each PING (checksum, length and data) and
//! echoes the intact ones. Both speak the line contract of
//! `workload_check::line`:
//!
//! - `CHECK net ok <n>`: at most one every [`OK_EVERY_MS`], when frames
//!   were verified since the last (the pinger: echoes checked byte for
//!   byte against their PINGs; the echoer: PINGs whose checksum and data
//!   were right); `n` counts these lines from 1;
//! - `CHECK net BROKEN <detail>`: a frame whose checksum, length or data
//!   is wrong (the echoer does not echo it; the pinger waits for a right
//!   echo or resends), an echo of a frame not yet sent, a PING with no
//!   echo for [`NO_ECHO_MS`] (it goes on resending), nothing from the
//!   peer for [`SILENCE_MS`] (the echoer goes on waiting). The first 50
//!   are printed, then every 1000th (`workload_check::line::Limiter`).
//!
//! An echo carrying another nonce is a late one from before this boot of
//! the pinger and is ignored (counted), as are echoes of earlier frames
//! (duplicates of resent PINGs); the echoer accepts PINGs in any order,
//! so either VM may be booted again. Nothing here fails the test; each
//! side ends (status 0) after the DONE exchange: `netcheck: campaign:
//! pinger: ...` or `netcheck: campaign: echoer: ...` with its counts.

use core::fmt;

use guest_runtime::{println, rdtsc_ordered};
use workload_check::line::{self, Limiter, NET};
use workload_check::pace::Pacer;

use crate::{
    BUFFER, Clock, DONE, DONE_ACK, DONE_TRIES, ECHO, ECHO_TIMEOUT_MS, LINGER_MS, NET_HEADER, Nic,
    PING, Settings, common, control, kind_name, pattern, payload_length, verify_checksum,
    verify_echo, verify_ping, write_frame,
};

/// The shortest time between two `ok` lines.
const OK_EVERY_MS: u64 = 100;
/// A PING unanswered this long is reported (and resent on).
const NO_ECHO_MS: u64 = 30_000;
/// The echoer reports a silence of the peer this long (and waits on).
const SILENCE_MS: u64 = 30_000;

/// Prints a BROKEN line unless `limiter` leaves it out.
fn broken(limiter: &mut Limiter, detail: fmt::Arguments<'_>) {
    match limiter.admit() {
        Some(0) => println!("{}", line::broken(NET, format_args!("{detail}"))),
        Some(left_out) => println!(
            "{}",
            line::broken(
                NET,
                format_args!("{detail} ({left_out} like reports not shown)")
            )
        ),
        None => {}
    }
}

/// The pinger's side (see the module's documentation).
pub fn ping(
    nic: &mut Nic,
    clock: &Clock,
    peer: [u8; 6],
    received: &mut [u8; BUFFER as usize],
    settings: &Settings,
) {
    let limit = settings.frames_given.then_some(settings.frames);
    // This boot's nonce, never 0 (the default run's flags).
    let nonce = (rdtsc_ordered() >> 8) as u8 | 1;
    let mut pacer = Pacer::new(clock.ms(OK_EVERY_MS), rdtsc_ordered());
    let mut reports = Limiter::new();
    let mut sent = [0u8; BUFFER as usize];
    let (mut echoed, mut resent, mut duplicates, mut stale) = (0u64, 0u64, 0u64, 0u64);
    let mut sequence = 0u32;
    while limit.is_none_or(|limit| sequence < limit) {
        sequence = sequence.wrapping_add(1).max(1);
        let length = write_frame(
            &mut sent,
            (peer, nic.mac),
            (PING, nonce, sequence),
            payload_length(sequence),
            |index| pattern(sequence, index),
        );
        let mut since = rdtsc_ordered();
        let mut tries = 0u64;
        'resend: loop {
            if tries > 0 {
                resent += 1;
                let now = rdtsc_ordered();
                if now - since >= clock.ms(NO_ECHO_MS) {
                    broken(
                        &mut reports,
                        format_args!(
                            "no echo of frame {sequence} in {} s ({tries} tries); resending on",
                            NO_ECHO_MS / 1000
                        ),
                    );
                    since = now;
                }
            }
            nic.send(&sent[..NET_HEADER + length]);
            tries += 1;
            let deadline = rdtsc_ordered() + clock.ms(ECHO_TIMEOUT_MS);
            loop {
                let Some(got) = nic.receive(clock, deadline, received) else {
                    continue 'resend;
                };
                let Some(message) = common(nic, peer, received, got) else {
                    continue;
                };
                let frame = &received[NET_HEADER..NET_HEADER + got];
                match message.kind {
                    ECHO => {
                        if let Err(problem) = verify_checksum("an ECHO", frame) {
                            broken(&mut reports, format_args!("{problem}"));
                        } else if message.flags != nonce {
                            stale += 1;
                        } else if message.sequence == sequence {
                            match verify_echo(&sent[NET_HEADER..NET_HEADER + length], frame) {
                                Ok(()) => break 'resend,
                                Err(problem) => broken(&mut reports, format_args!("{problem}")),
                            }
                        } else if message.sequence < sequence {
                            duplicates += 1;
                        } else {
                            broken(
                                &mut reports,
                                format_args!(
                                    "an ECHO of frame {} while frame {sequence} is the latest sent",
                                    message.sequence
                                ),
                            );
                        }
                    }
                    PING | DONE => broken(
                        &mut reports,
                        format_args!(
                            "the peer sent a {} as if it pinged too",
                            kind_name(message.kind)
                        ),
                    ),
                    _ => nic.ignored += 1,
                }
            }
        }
        echoed += 1;
        if let Some(n) = pacer.checked(rdtsc_ordered()) {
            println!("{}", line::ok(NET, n));
        }
    }
    let length = control(&mut sent, peer, nic.mac, DONE, sequence);
    let mut acknowledged = false;
    'done: for _ in 0..DONE_TRIES {
        nic.send(&sent[..NET_HEADER + length]);
        let deadline = rdtsc_ordered() + clock.ms(ECHO_TIMEOUT_MS);
        while let Some(got) = nic.receive(clock, deadline, received) {
            let Some(message) = common(nic, peer, received, got) else {
                continue;
            };
            match message.kind {
                DONE_ACK => {
                    acknowledged = true;
                    break 'done;
                }
                ECHO => duplicates += 1,
                _ => nic.ignored += 1,
            }
        }
    }
    if !acknowledged {
        broken(
            &mut reports,
            format_args!("no DONE-ACK after {DONE_TRIES} DONEs"),
        );
    }
    println!(
        "netcheck: campaign: pinger: {echoed} frames echoed intact ({resent} resent, {duplicates} duplicates and {stale} echoes of an earlier boot ignored), {} ok lines, {} broken",
        pacer.lines(),
        reports.seen()
    );
}

/// The echoer's side (see the module's documentation).
pub fn echo(
    nic: &mut Nic,
    clock: &Clock,
    peer: [u8; 6],
    frame: &mut [u8; BUFFER as usize],
    mut pending: Option<usize>,
) {
    let mut pacer = Pacer::new(clock.ms(OK_EVERY_MS), rdtsc_ordered());
    let mut reports = Limiter::new();
    let mut intact = 0u64;
    let mut heard = rdtsc_ordered();
    // Once DONE came: until when to stay for another.
    let mut linger: Option<u64> = None;
    loop {
        let deadline = linger.unwrap_or(heard + clock.ms(SILENCE_MS));
        let got = match pending.take() {
            Some(length) => Some(length),
            None => nic.receive(clock, deadline, frame),
        };
        let Some(length) = got else {
            if linger.is_some() {
                break;
            }
            broken(
                &mut reports,
                format_args!(
                    "nothing from the peer for {} s after {intact} PINGs; waiting on",
                    SILENCE_MS / 1000
                ),
            );
            heard = rdtsc_ordered();
            continue;
        };
        let Some(message) = common(nic, peer, frame, length) else {
            continue;
        };
        heard = rdtsc_ordered();
        match message.kind {
            PING => {
                if let Err(problem) =
                    verify_ping(&frame[NET_HEADER..NET_HEADER + length], message.sequence)
                {
                    // Not echoed: the pinger sends it again.
                    broken(&mut reports, format_args!("{problem}"));
                    continue;
                }
                intact += 1;
                let frame_bytes = &mut frame[NET_HEADER..NET_HEADER + length];
                frame_bytes[..6].copy_from_slice(&peer);
                frame_bytes[6..12].copy_from_slice(&nic.mac);
                frame_bytes[crate::AT_KIND] = ECHO;
                // Sent with every other frame taken meanwhile once no
                // more wait (see `Nic::receive`): one notify per batch.
                nic.queue(&frame[..NET_HEADER + length]);
                if let Some(n) = pacer.checked(heard) {
                    println!("{}", line::ok(NET, n));
                }
            }
            DONE => {
                let length = control(frame, peer, nic.mac, DONE_ACK, message.sequence);
                nic.send(&frame[..NET_HEADER + length]);
                linger = Some(rdtsc_ordered() + clock.ms(LINGER_MS));
            }
            ECHO => broken(
                &mut reports,
                format_args!("the peer sent an ECHO as if we pinged"),
            ),
            _ => nic.ignored += 1,
        }
    }
    println!(
        "netcheck: campaign: echoer: {intact} PINGs intact and echoed, {} ok lines, {} broken",
        pacer.lines(),
        reports.seen()
    );
}
