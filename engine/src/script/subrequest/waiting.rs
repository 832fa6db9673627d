//! A hook that may wait on sub-requests, run as a coroutine and metered
//! per resume: the time budget, the watchdog's stamp and the hook timing
//! count only the time its Lua runs, never the time it waits. Several
//! such hooks may be waiting on one worker at once, and other requests'
//! synchronous hooks run in between; the budget is shared by the VM, so
//! each resume arms it anew with what this hook has left.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{CanWait, Origin};
use crate::context::stamp::{Doing, Stamp};
use crate::script::Vm;

/// The coroutine's future, metered. `ran` is the Lua time so far.
pub struct Metered<'a, F> {
    inner: Pin<Box<F>>,
    vm: &'a Vm,
    can_wait: &'a CanWait,
    /// The worker's pulse, the hook's place and the request's sequence.
    pulse: Option<(&'a Stamp, u32, u64)>,
    /// The coroutine's Lua thread (see `CanWait`), once its first resume
    /// has noted it.
    thread: Option<*const std::ffi::c_void>,
    left: Duration,
    pub ran: Duration,
    /// The request the hook runs for, as its sub-requests see it.
    origin: Origin,
    /// What the watchdog's stamp says runs (`on_request` unless told).
    doing: Doing,
}

impl<'a, F> Metered<'a, F> {
    pub fn new(
        vm: &'a Vm,
        can_wait: &'a CanWait,
        pulse: Option<(&'a Stamp, u32, u64)>,
        budget: Duration,
        origin: Origin,
        inner: F,
    ) -> Self {
        Metered {
            doing: Doing::OnRequest,
            origin,
            thread: None,
            inner: Box::pin(inner),
            vm,
            can_wait,
            pulse,
            left: budget,
            ran: Duration::ZERO,
        }
    }

    /// The hook the watchdog's stamp names (`on_connect` on a `tcp`
    /// listener waiting for a ClientHello).
    pub fn doing(mut self, doing: Doing) -> Self {
        self.doing = doing;
        self
    }
}

/// Ends a resume however it ends (mlua re-raises a callback's panic).
struct Resumed<'a>(&'a Vm, &'a CanWait, Option<&'a Stamp>);

impl Drop for Resumed<'_> {
    fn drop(&mut self) {
        self.1 .0.thread.set(std::ptr::null());
        self.1 .0.marking.set(false);
        self.0.pause_budget();
        if let Some(p) = self.2 {
            p.leave();
        }
    }
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.vm.resume_budget(this.left);
        match this.thread {
            Some(thread) => this.can_wait.0.thread.set(thread),
            None => this.can_wait.0.marking.set(true),
        }
        this.can_wait.0.origin.set(this.origin);
        this.can_wait
            .0
            .requests
            .set(matches!(this.doing, Doing::OnRequest));
        if let Some((p, place, seq)) = this.pulse {
            p.enter(this.doing, place, seq);
        }
        let resumed = Resumed(this.vm, this.can_wait, this.pulse.map(|p| p.0));
        let start = Instant::now();
        let out = this.inner.as_mut().poll(cx);
        let spent = start.elapsed();
        if this.thread.is_none() {
            let noted = this.can_wait.0.thread.get();
            this.thread = (!noted.is_null()).then_some(noted);
        }
        drop(resumed);
        this.ran += spent;
        this.left = this.left.saturating_sub(spent);
        out
    }
}
