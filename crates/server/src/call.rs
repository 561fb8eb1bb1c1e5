//! One relayed call's metadata, gathered phase by phase and written as a call record
//! exactly once: when the call finishes, or — if the client disconnects or the task is
//! dropped for any other reason — from `Drop`, as `client_closed`. The logging phase
//! therefore runs on every path, like pingora's `logging` hook.

use crate::records::RecordSink;
use crate::request_meta::RequestMeta;
use crate::state::Principal;
use std::time::Instant;
use veil_domain::{
    CallRecord, ChannelName, ErrorCode, GroupName, ModelName, Multiplier, PolicyClass, Timestamp, TokenUsage,
};

pub struct Call {
    sink: RecordSink,
    started: Instant,
    first_token: Option<Instant>,
    record: Option<CallRecord>,
}

impl Call {
    pub fn begin(
        meta: &RequestMeta,
        principal: &Principal,
        group: GroupName,
        multiplier: Multiplier,
        path: &'static str,
        client_ip: String,
        sink: RecordSink,
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
        Self { sink, started: meta.received, first_token: None, record: Some(record) }
    }

    fn with_record(&mut self, update: impl FnOnce(&mut CallRecord)) {
        if let Some(record) = self.record.as_mut() {
            update(record);
        }
    }

    pub fn set_stream(&mut self, stream: bool) {
        self.with_record(|r| r.stream = stream);
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

    pub fn set_usage(&mut self, usage: TokenUsage, estimated: bool) {
        self.with_record(|r| {
            r.usage = usage;
            r.estimated = estimated;
        });
    }

    pub fn mark_first_token(&mut self) {
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
    }

    /// Writes the record with its final status.
    pub fn finish(mut self, status: u16, error: Option<ErrorCode>) {
        self.complete(status, error);
    }

    fn complete(&mut self, status: u16, error: Option<ErrorCode>) {
        let Some(mut record) = self.record.take() else { return };
        record.status = status;
        record.error_code = error;
        record.latency_ms = millis(self.started.elapsed());
        record.ttft_ms = self.first_token.map(|at| millis(at.duration_since(self.started)));
        self.sink.submit(record);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Only reached without `finish` when the client went away mid-call.
        self.complete(499, Some(ErrorCode::ClientClosed));
    }
}

fn millis(duration: std::time::Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}
