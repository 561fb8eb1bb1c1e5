//! One relayed call's context, gathered phase by phase, and its settle-and-record phase,
//! which runs exactly once: when the call finishes, or — if the client disconnects or the
//! task is dropped for any other reason — from `Drop`, as `client_closed`. Like pingora's
//! `logging` hook it runs on every path, so a hold is always settled (or released), the
//! rate-limit reservation reconciled, and the record written with the charge.

use crate::metering::Reserved;
use crate::records::Committed;
use crate::request_meta::RequestMeta;
use crate::state::{AppState, Principal};
use std::sync::Arc;
use std::time::Instant;
use veil_domain::{
    CallRecord, ChannelName, ErrorCode, GroupName, ModelName, Money, Multiplier, PolicyClass, Timestamp, TokenUsage,
};
use veil_limits::Admission;

pub struct Call {
    state: Arc<AppState>,
    started: Instant,
    first_token: Option<Instant>,
    record: Option<CallRecord>,
    /// The hold and rate-limit room taken in the reserve phase.
    reserved: Option<Reserved>,
    /// The serving channel's concurrency lease, held until the call ends.
    channel_admission: Option<Admission>,
    /// Whether usage was reported (or estimated from what was delivered).
    usage_known: bool,
    /// The request's span, told the call's outcome when it completes.
    span: tracing::Span,
}

impl Call {
    pub fn begin(
        meta: &RequestMeta,
        principal: &Principal,
        group: GroupName,
        multiplier: Multiplier,
        path: &'static str,
        client_ip: String,
        state: Arc<AppState>,
    ) -> Self {
        let record = CallRecord {
            request_id: meta.request_id.clone(),
            time: Timestamp::now(),
            user_id: Some(principal.user.id),
            key_id: Some(principal.key.id),
            group: Some(group),
            model: None,
            upstream_model: None,
            channel: None,
            path,
            stream: false,
            usage: TokenUsage::default(),
            cost: veil_domain::Money::ZERO,
            multiplier,
            status: 0,
            error_code: None,
            latency_ms: 0,
            ttft_ms: None,
            client_ip,
            user_agent: meta.user_agent.clone(),
            redactions: 0,
            rule_id: None,
            policy_class: None,
            estimated: false,
            channels_tried: Vec::new(),
        };
        Self {
            state,
            started: meta.received,
            first_token: None,
            record: Some(record),
            reserved: None,
            channel_admission: None,
            usage_known: false,
            span: meta.span.clone(),
        }
    }

    fn with_record(&mut self, update: impl FnOnce(&mut CallRecord)) {
        if let Some(record) = self.record.as_mut() {
            update(record);
        }
    }

    pub fn set_stream(&mut self, stream: bool) {
        self.with_record(|r| r.stream = stream);
    }

    /// How long a relayed stream may be silent toward the client before a keep-alive.
    pub fn stream_keepalive(&self) -> std::time::Duration {
        self.state.stream_keepalive
    }

    /// Records the model asked for. Only called once the name is known to the catalogue:
    /// an arbitrary name from the client is client text and must not be stored.
    pub fn set_model(&mut self, model: ModelName) {
        self.with_record(|r| r.model = Some(model));
    }

    /// Notes the channel about to be tried (the last one tried is the one that served).
    pub fn trying(&mut self, channel: ChannelName, upstream_model: ModelName, class: PolicyClass) {
        self.with_record(|r| {
            r.channels_tried.push(channel.clone());
            r.channel = Some(channel);
            r.upstream_model = Some(upstream_model);
            r.policy_class = Some(class);
        });
    }

    pub fn set_redactions(&mut self, count: u32) {
        self.with_record(|r| r.redactions = count);
    }

    /// The content-screening rule that blocked the call (its id, never the text).
    pub fn set_rule(&mut self, rule_id: String) {
        self.with_record(|r| r.rule_id = Some(rule_id));
    }

    pub fn reserve(&mut self, reserved: Reserved) {
        self.reserved = Some(reserved);
    }

    /// The `x-ratelimit-*` headers to send with a successful answer.
    pub fn rate_headers(&self) -> Vec<(&'static str, String)> {
        self.reserved.as_ref().map(|r| r.admission.headers().pairs()).unwrap_or_default()
    }

    /// Keeps the serving channel's lease until the call ends (a retry replaces it).
    pub fn admitted_to_channel(&mut self, admission: Admission) {
        self.channel_admission = Some(admission);
    }

    pub fn set_usage(&mut self, usage: TokenUsage, estimated: bool) {
        self.usage_known = true;
        self.with_record(|r| {
            r.usage = usage;
            r.estimated = estimated;
        });
    }

    /// The cost of a call settled outside this type (an asynchronous video job writes its
    /// charge with the job itself); only meaningful for a call given no hold to settle.
    pub fn set_cost(&mut self, cost: Money) {
        self.with_record(|r| r.cost = cost);
    }

    pub fn mark_first_token(&mut self) {
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
    }

    /// Settles the call and writes its record with its final status; the returned
    /// [`Committed`] resolves once that is durable (see `records.rs`).
    pub fn finish(mut self, status: u16, error: Option<ErrorCode>) -> Committed {
        self.complete(status, error)
    }

    fn complete(&mut self, status: u16, error: Option<ErrorCode>) -> Committed {
        let Some(mut record) = self.record.take() else { return Committed::default() };
        record.status = status;
        record.error_code = error;
        record.latency_ms = millis(self.started.elapsed());
        record.ttft_ms = self.first_token.map(|at| millis(at.duration_since(self.started)));
        let ledger = match self.reserved.take() {
            Some(reserved) => self.settle(&mut record, reserved),
            None => Vec::new(),
        };
        self.channel_admission = None;
        crate::metrics::record_call(&record);
        crate::request_meta::note_call(&self.span, &record);
        self.state.records.submit(record, ledger)
    }

    /// Settles the call from its usage. A call the client abandoned after it reached an
    /// upstream, before any usage was seen, is billed its prompt as counted locally (the
    /// upstream processed it), marked estimated; a call that never reached an upstream, or
    /// that an upstream refused, costs nothing.
    fn settle(&mut self, record: &mut CallRecord, mut reserved: Reserved) -> Vec<veil_domain::LedgerEntry> {
        if !self.usage_known && error_is_disconnect(record) && !record.channels_tried.is_empty() {
            record.usage = TokenUsage { input_tokens: reserved.prompt_tokens, ..TokenUsage::default() };
            record.estimated = true;
        }
        let cost = reserved.price.charge(&record.usage, reserved.multiplier);
        record.cost = cost;
        reserved.admission.reconcile(record.usage.total_tokens());
        let now = Timestamp::now();
        if cost > Money::ZERO
            && let (Some(key), Some(user)) = (record.key_id, record.user_id)
        {
            self.state.risk.note_spend(key, user, cost, now);
        }
        reserved.hold.settle(cost, now)
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Only reached without `finish` when the client went away mid-call: nobody is
        // waiting for the answer, so nobody waits for the commit either.
        drop(self.complete(499, Some(ErrorCode::ClientClosed)));
    }
}

fn error_is_disconnect(record: &CallRecord) -> bool {
    record.error_code == Some(ErrorCode::ClientClosed)
}

fn millis(duration: std::time::Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}
