//! Synchronous calls: a client's [`Client::call`] and a server's
//! [`Server::reply_wait`] (`Syscall::Call` and `Syscall::ReplyWait`).
//!
//! A call carries one [`Message`] of eight words each way in registers,
//! which the core moves from one thread's saved registers to the
//! other's: nothing is shared, so nothing needs a checksum, a stamp or a
//! generation, and a round trip is two system calls with no memory
//! traffic of its own. The server learns each caller by the badge capdl
//! gave its capability (listed by caller name on the server's start
//! page); a server that ends after taking a request leaves its caller with
//! [`CallError::Unanswered`], and requests it had not taken wait for its
//! next life. Queues stay the way to move bulk data; calls are for small
//! requests that want an answer at once.
//!
//! The server's notification word is bound to its `ReplyWait`: a signal
//! ends the wait with [`Served::Signalled`], its bits kept for the
//! component's waiters as [`crate::notification`] keeps them (take them
//! with [`crate::notification::take`]). A server with queues also wakes at
//! least every [`crate::queue::RECHECK_US`] to look for queue work whose
//! signal was lost, as every wait of such a component does.

use microvisor_abi::spec::CapabilityKind;
use microvisor_abi::start::ResourceView;
use microvisor_abi::syscall::{MESSAGE_WORDS, NO_REPLY, REPLY, Status, Syscall, WAIT_FOREVER};

use crate::{Start, notification, queue};

/// One request or reply: eight words.
pub type Message = [u64; MESSAGE_WORDS];

/// Why a call returned no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The timeout passed first (a request taken meanwhile is answered
    /// into the void).
    TimedOut,
    /// The server took the request and ended (or declined it), or it has
    /// ended for good: the request may or may not have been carried out.
    Unanswered,
}

/// The calling side of an endpoint capability.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    handle: u64,
}

impl Client {
    /// The endpoint capability called `name`, if this component holds
    /// one.
    pub fn open(start: &Start, name: &str) -> Option<Self> {
        start.views().find_map(|(found, view)| match view {
            ResourceView::Capability { handle, kind }
                if found == name && kind == CapabilityKind::Endpoint as u32 =>
            {
                Some(Self { handle })
            }
            _ => None,
        })
    }

    /// Sends the request in `message` and waits for the reply, which
    /// replaces it, for at most `timeout_us` (`None`: as long as it
    /// takes; `Some(0)`, a call that could only time out, is a misuse the
    /// core faults). After an error `message` holds nothing of use. A deferred
    /// signal is sent first. (In place, so that a caller's message can
    /// stay in registers around the system call.)
    #[inline]
    pub fn call(&self, message: &mut Message, timeout_us: Option<u64>) -> Result<(), CallError> {
        notification::flush();
        let (status, _) = issue(
            Syscall::Call,
            self.handle,
            timeout_us.unwrap_or(WAIT_FOREVER),
            message,
        );
        match status {
            s if s == Status::Ok as u64 => Ok(()),
            s if s == Status::TimedOut as u64 => Err(CallError::TimedOut),
            _ => Err(CallError::Unanswered),
        }
    }
}

/// What [`Server::reply_wait`] brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// A request (in the message) from the caller known by `badge`, owed
    /// a reply.
    Request { badge: u64 },
    /// Notification bits (kept for [`crate::notification::take`]), or
    /// queue work whose signal was lost.
    Signalled,
    /// The timeout passed.
    TimedOut,
}

/// The serving side: this component's `ReplyWait`. Whom a reply is owed
/// is the core's to know: a reply when none is owed is dropped.
#[derive(Debug, Default)]
pub struct Server {}

impl Server {
    pub const fn new() -> Self {
        Self {}
    }

    /// Answers the request taken last with the reply in `message` when
    /// `reply` (dropped when none is owed; without `reply` a request owed
    /// is declined: its caller gets [`CallError::Unanswered`]), and waits
    /// for the next request, which replaces `message`, or a signal, for at
    /// most `timeout_us` (`None`: as long as it takes). Unless a request came,
    /// `message` holds nothing of use. A deferred signal is sent first;
    /// with bits already received it does not wait (it polls: a request
    /// waiting comes first, the bits with the next call).
    #[inline]
    pub fn reply_wait(
        &mut self,
        message: &mut Message,
        reply: bool,
        timeout_us: Option<u64>,
    ) -> Served {
        notification::flush();
        if queue::watching() || notification::pending() != 0 {
            // By value, so that `message` does not live in memory on the
            // common path for the sake of this one.
            let served;
            (served, *message) = self.reply_wait_looking(*message, reply, timeout_us);
            return served;
        }
        // The common case: one system call.
        let flag = if reply { REPLY } else { NO_REPLY };
        let (status, answer) = issue(
            Syscall::ReplyWait,
            flag,
            timeout_us.unwrap_or(WAIT_FOREVER),
            message,
        );
        self.answered(status, answer).unwrap_or(Served::TimedOut)
    }

    /// What a `ReplyWait` answered, `None` when it timed out; signalled
    /// bits are kept for the component's waiters.
    #[inline(always)]
    fn answered(&mut self, status: u64, answer: Answer) -> Option<Served> {
        if status != Status::Ok as u64 {
            return None;
        }
        if answer.badge != 0 {
            return Some(Served::Request {
                badge: answer.badge,
            });
        }
        notification::keep(answer.bits);
        Some(Served::Signalled)
    }

    /// [`Self::reply_wait`] of a component with queues or with bits
    /// already received: it must come back at once with bits pending, and
    /// look at its queues at least every [`queue::RECHECK_US`].
    #[inline(never)]
    fn reply_wait_looking(
        &mut self,
        mut message: Message,
        reply: bool,
        timeout_us: Option<u64>,
    ) -> (Served, Message) {
        let watching = queue::watching();
        let mut reply = reply;
        let mut left = timeout_us;
        loop {
            // Bits already received for the component's waiters: answer
            // (if owed) and come back at once.
            let pending = notification::pending() != 0;
            let step = if pending {
                Some(0)
            } else if watching {
                Some(left.map_or(queue::RECHECK_US, |left| left.min(queue::RECHECK_US)))
            } else {
                left
            };
            let flag = if core::mem::take(&mut reply) {
                REPLY
            } else {
                NO_REPLY
            };
            let (status, answer) = issue(
                Syscall::ReplyWait,
                flag,
                step.unwrap_or(WAIT_FOREVER),
                &mut message,
            );
            if let Some(served) = self.answered(status, answer) {
                return (served, message);
            }
            // The step ran out: bits were pending, a look finds queue
            // work whose signal was lost, or time is up.
            if pending || (watching && notification::look_all()) {
                return (Served::Signalled, message);
            }
            match (left, step) {
                (Some(left_us), Some(step_us)) if left_us <= step_us => {
                    return (Served::TimedOut, message);
                }
                (Some(left_us), Some(step_us)) => left = Some(left_us - step_us),
                _ => {}
            }
        }
    }
}

/// What one `Call` or `ReplyWait` answered besides its status and the
/// message.
struct Answer {
    /// `ReplyWait`: the caller's badge, 0 for a signal.
    badge: u64,
    /// `ReplyWait`: the signalled bits.
    bits: u64,
}

/// Issues `Call` or `ReplyWait` with `rdi`, `rsi` and `message` in the
/// message registers, which come back into `message`; returns the status
/// and what else came back.
#[inline(always)]
fn issue(call: Syscall, rdi: u64, rsi: u64, message: &mut Message) -> (u64, Answer) {
    let status: u64;
    let (badge, bits): (u64, u64);
    let [m0, m1, m2, m3, m4, m5, m6, m7] = message;
    // SAFETY: the core preserves the stack and every register this does
    // not name; the message registers (`MESSAGE_REGISTERS`, including
    // callee-saved r12..r15) are declared as inputs and outputs, rcx and
    // r11 (clobbered by `syscall`) as clobbered. No memory is passed.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") call as u64 => status,
            inlateout("rdi") rdi => badge,
            inlateout("rsi") rsi => bits,
            inout("rdx") *m0, inout("r10") *m1, inout("r8") *m2, inout("r9") *m3,
            inout("r12") *m4, inout("r13") *m5, inout("r14") *m6, inout("r15") *m7,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    (status, Answer { badge, bits })
}
