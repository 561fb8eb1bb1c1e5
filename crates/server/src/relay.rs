//! The request lifecycle for relayed calls, as explicit phases:
//!
//! 1. authenticate (done by the extractor before this module is reached),
//! 2. validate the request just enough to route it,
//! 3. screen: the group's deny rules (keywords, patterns), before anything leaves,
//! 4. resolve: the caller's group, the key's model allow-list, the candidate channels
//!    that serve the model and whose data policy the caller accepts,
//! 5. reserve: the model's price, rate-limit room for the key and the user, and a hold
//!    of the call's worst case on the owner's money (see `metering.rs`),
//! 6. firewall: strip identifiers; with `pii`, replace personal data by placeholders
//!    (restored in the response, streaming included),
//! 7. call upstream, failing over to the next candidate on retryable errors while
//!    nothing has been sent to the client, skipping channels at their own limits and
//!    channels cooling down (`health.rs`), by the rules of `failover.rs`,
//! 8. respond: a whole body, or a stream transformed event by event, with the data
//!    receipt and rate-limit headers,
//! 9. settle and record: exactly once on every path (see `call.rs`).
//!
//! OpenAI's media endpoints go through the same phases ([`relay_media`]); what is
//! particular to them (multipart files, each endpoint's input, usage, the media vault,
//! speech bytes streamed out) lives in `openai/media.rs`.

use crate::call::Call;
use crate::capture::Capturing;
use crate::client_ip;
use crate::error::ApiError;
use crate::failover::Failover;
use crate::openai::media::{self as openai_media, MediaInbound};
use crate::openai::request::{self, RoutedRequest};
use crate::openai::stream::{self, ClientStream, Framing, StreamPlan};
use crate::openai::usage;
use crate::request_meta::RequestMeta;
use crate::screening::Verdict;
use crate::state::{AppState, Principal, Snapshot};
use crate::{firewall, metering, receipt};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::sync::Arc;
use veil_domain::{ErrorCode, FirewallMode, GroupName, Pricing, PrivacyRequirement, Timestamp, TokenUsage};
use veil_limits::{Demand, Limits, Scope};
use veil_protocol::ClientFormat;
use veil_protocol::translate::StreamTranslator;
use veil_providers::{Endpoint, Provider, UpstreamError, UpstreamReply, UpstreamRequest};
use veil_routing::{Candidate, SessionKey};

/// A call as the client made it, already in the relay's working form.
pub struct Inbound {
    pub endpoint: Endpoint,
    /// The format to answer in.
    pub format: ClientFormat,
    /// The route the client called, recorded as the call's path.
    pub route: &'static str,
    /// How a translated stream is framed (Gemini without `alt=sse` wants a JSON array).
    pub framing: Framing,
    /// The request as an OpenAI body: the client's own for OpenAI routes, a translation
    /// for the others.
    pub body: Map<String, Value>,
}

/// Relays a call made on one of OpenAI's routes.
pub async fn relay_openai(
    state: &Arc<AppState>,
    principal: Arc<Principal>,
    meta: RequestMeta,
    endpoint: Endpoint,
    body: Map<String, Value>,
) -> Response {
    let inbound =
        Inbound { endpoint, format: ClientFormat::OpenAiChat, route: endpoint.route(), framing: Framing::Sse, body };
    relay(state, principal, meta, inbound).await
}

/// Relays a call to one of OpenAI's media routes (`openai/media.rs`): the same phases,
/// with the request's files and an answer that may be raw bytes.
pub async fn relay_media(
    state: &Arc<AppState>,
    principal: Arc<Principal>,
    meta: RequestMeta,
    endpoint: Endpoint,
    body: Map<String, Value>,
    media: MediaInbound,
) -> Response {
    let inbound =
        Inbound { endpoint, format: ClientFormat::OpenAiChat, route: endpoint.route(), framing: Framing::Sse, body };
    run(state, principal, meta, inbound, Some(media)).await
}

pub async fn relay(state: &Arc<AppState>, principal: Arc<Principal>, meta: RequestMeta, inbound: Inbound) -> Response {
    run(state, principal, meta, inbound, None).await
}

async fn run(
    state: &Arc<AppState>,
    principal: Arc<Principal>,
    meta: RequestMeta,
    inbound: Inbound,
    media: Option<MediaInbound>,
) -> Response {
    let Inbound { endpoint, format, route, framing, mut body } = inbound;
    let snapshot = state.snapshot.load_full();
    let group = snapshot.group(&principal.user.group);
    let ip = client_ip::for_record(meta.client_ip, state.ip_logging, &state.hasher, Timestamp::now());
    let mut call = Call::begin(&meta, &principal, group.name.clone(), group.multiplier, route, ip, Arc::clone(state));

    // Validate.
    let routed = match request::validate(endpoint, &body) {
        Ok(routed) => routed,
        Err(error) => return fail(call, error, None).await,
    };
    call.set_stream(routed.stream);
    let (files, media_plan) = match &media {
        Some(media) => match openai_media::check(endpoint, &mut body, media) {
            Ok(plan) => (media.files.clone(), Some(plan)),
            Err(error) => return fail(call, error, None).await,
        },
        None => (None, None),
    };

    // Screen: the group's deny rules, before anything leaves.
    if let Err(error) = screen(&snapshot, &group.name, &body, &mut call) {
        return fail(call, error, None).await;
    }

    // Resolve: which channels may serve this model for this caller, policy included.
    let requirement = group.privacy.for_key(principal.key.allow_training, &principal.key.privacy);
    let candidates = match resolve(&snapshot, &principal, &group.name, &requirement, &routed, meta.session, &mut call) {
        Ok(candidates) => candidates,
        Err(error) => return fail(call, error, None).await,
    };

    // Reserve: price, rate limits and the hold, before anything leaves.
    let unknown;
    let model = match snapshot.catalogue.model(&routed.model) {
        Some(model) => model,
        None => {
            unknown = unpriced(&routed.model);
            &unknown
        }
    };
    match metering::reserve(state, &principal, &group, model, endpoint, &body, meta.request_id.as_str()).await {
        Ok(reserved) => call.reserve(reserved),
        Err(error) => return fail(call, error, None).await,
    }

    // Debug capture, when the key's owner turned it on: the request as the client sent it.
    let now = Timestamp::now();
    let mut capture = principal.capture_until.filter(|until| *until > now).map(|until| {
        Capturing::new(
            principal.key.id,
            principal.user.id,
            meta.request_id.to_string(),
            until,
            Value::Object(body.clone()),
        )
    });

    // Firewall: what of the request may leave.
    firewall::apply_identity(requirement.firewall, endpoint, &mut body, || {
        format!("veil_{}", client_ip::monthly_pseudonym(&state.hasher, "abuse-id", &principal.user.id.to_string(), now))
    });
    let redaction = if requirement.firewall == FirewallMode::Pii {
        match firewall::apply_pii(state.pii.as_ref(), &mut body) {
            Ok(redaction) => Some(redaction),
            Err(error) => return fail(call, error, None).await,
        }
    } else {
        None
    };
    let redactions = redaction.as_ref().map_or(0, |r| r.total);
    call.set_redactions(redactions);
    if routed.stream && !routed.client_wants_usage {
        // Always ask for usage so the call can be settled exactly; the extra chunk is
        // hidden from the client again in `stream.rs`.
        body.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
    }
    let body = Arc::new(body);

    // Call upstream, failing over while nothing has reached the client.
    let (outcome, served_by) =
        call_upstream(state, &candidates, endpoint, &routed, &body, files.as_ref(), &mut call).await;
    let rate_headers = call.rate_headers();
    let served_class = media_plan.as_ref().and(served_by.as_ref()).map(|c| c.channel.policy.class());
    let receipt = served_by.and_then(|channel| receipt::header(&channel.channel, requirement.firewall, redactions));
    let restorer = redaction.map(|r| r.restorer);

    // Respond and record.
    let mut response =
        match outcome {
            Ok(UpstreamReply::Complete(bytes)) if media_plan.is_some() => {
                let Some(plan) = media_plan.as_ref() else { return fail(call, ApiError::internal(), receipt).await };
                let bytes = match &restorer {
                    Some(restorer) => firewall::restore_body(bytes, restorer),
                    None => bytes,
                };
                let answer =
                    match openai_media::complete(state, principal.user.id, endpoint, plan, &body, served_class, bytes)
                        .await
                    {
                        Ok(answer) => answer,
                        Err(error) => return fail(call, error, receipt).await,
                    };
                call.set_usage(answer.usage, answer.estimated);
                call.mark_first_token();
                let committed = call.finish(200, None);
                if let Some(mut capture) = capture.take() {
                    capture.append(&answer.body);
                    capture.finish(&state.captures, 200);
                }
                committed.await;
                let mut response = (StatusCode::OK, answer.body).into_response();
                response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
                response
            }
            Ok(UpstreamReply::Bytes { content_type, body: chunks }) => {
                if endpoint == Endpoint::AudioTranscriptions {
                    // Subtitles (srt, vtt): small, read whole for their duration.
                    let (bytes, usage) = match openai_media::subtitles(chunks).await {
                        Ok(read) => read,
                        Err(error) => return fail(call, error, receipt).await,
                    };
                    call.set_usage(usage, true);
                    call.mark_first_token();
                    call.finish(200, None).await;
                    let mut response = (StatusCode::OK, bytes).into_response();
                    if let Ok(value) = HeaderValue::from_str(&content_type) {
                        response.headers_mut().insert(header::CONTENT_TYPE, value);
                    }
                    response
                } else {
                    // Speech: no usage is reported; the input text is counted.
                    let input = TokenUsage { input_tokens: usage::estimate_prompt(&body), ..TokenUsage::default() };
                    call.set_usage(input, true);
                    if let Some(capture) = capture.take() {
                        capture.finish(&state.captures, 200);
                    }
                    openai_media::stream_bytes(&content_type, chunks, call)
                }
            }
            Ok(UpstreamReply::Complete(bytes)) => {
                let (usage, estimated) = match usage::from_body(&bytes) {
                    Some(usage) => (usage, false),
                    None => (estimate_whole(&body, &bytes), true),
                };
                call.set_usage(usage, estimated);
                call.mark_first_token();
                let bytes = match &restorer {
                    Some(restorer) => firewall::restore_body(bytes, restorer),
                    None => bytes,
                };
                let bytes = match client_body(format, bytes) {
                    Ok(bytes) => bytes,
                    Err(error) => return fail(call, error, receipt).await,
                };
                let committed = call.finish(200, None);
                if let Some(mut capture) = capture.take() {
                    capture.append(&bytes);
                    capture.finish(&state.captures, 200);
                }
                committed.await;
                json_response(bytes)
            }
            Ok(UpstreamReply::Stream(events)) => {
                let plan = StreamPlan {
                    client_wants_usage: routed.client_wants_usage,
                    request: Arc::clone(&body),
                    restore: restorer,
                    capture: capture.take().map(|c| (c, state.captures.clone())),
                    client: (format != ClientFormat::OpenAiChat)
                        .then(|| ClientStream { translator: StreamTranslator::to_client(format), framing }),
                };
                stream::sse_response(events, call, plan)
            }
            Err(error) => {
                if let Some(mut capture) = capture.take() {
                    capture.append(error.openai_body().to_string().as_bytes());
                    capture.finish(&state.captures, error.status.as_u16());
                }
                return fail(call, error, receipt).await;
            }
        };
    if let Some(receipt) = receipt {
        response.headers_mut().insert(receipt::DATA_POLICY, receipt);
    }
    for (name, value) in rate_headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A model routing knows but the catalogue has no entry for (e.g. a channel added through
/// the management API): it has no price, so it is refused like any unpriced model.
fn unpriced(name: &veil_domain::ModelName) -> veil_domain::Model {
    veil_domain::Model { name: name.clone(), pricing: Pricing::Unpriced, max_output_tokens: None, managed: false }
}

async fn fail(call: Call, error: ApiError, receipt: Option<HeaderValue>) -> Response {
    call.finish(error.status.as_u16(), Some(error.code)).await;
    let mut response = error.into_response();
    if let Some(receipt) = receipt {
        response.headers_mut().insert(receipt::DATA_POLICY, receipt);
    }
    response
}

/// An OpenAI completion body as the client format's answer.
fn client_body(format: ClientFormat, bytes: bytes::Bytes) -> Result<bytes::Bytes, ApiError> {
    if format == ClientFormat::OpenAiChat {
        return Ok(bytes);
    }
    let translated = serde_json::from_slice::<Value>(&bytes)
        .map_err(|_| veil_protocol::DecodeError::Malformed("the upstream body is not JSON"))
        .and_then(|value| veil_protocol::translate::client_response(format, &value))
        .map_err(|error| {
            tracing::warn!(error = %error, "an upstream answer could not be translated");
            ApiError::from_upstream(&UpstreamError::Malformed("the answer could not be translated"))
        })?;
    serde_json::to_vec(&translated).map(bytes::Bytes::from).map_err(|_| ApiError::internal())
}

fn json_response(bytes: bytes::Bytes) -> Response {
    let mut response = (StatusCode::OK, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn estimate_whole(body: &Map<String, Value>, reply: &[u8]) -> TokenUsage {
    let output = serde_json::from_slice::<Value>(reply).map_or(0, |v| usage::estimate_output(&v));
    TokenUsage { input_tokens: usage::estimate_prompt(body), output_tokens: output, ..TokenUsage::default() }
}

/// Phase 3: the group's deny rules (keywords, patterns), before anything leaves. A
/// blocked call records the rule's id, never the text that matched.
pub(crate) fn screen(
    snapshot: &Snapshot,
    group: &GroupName,
    body: &Map<String, Value>,
    call: &mut Call,
) -> Result<(), ApiError> {
    match snapshot.screen(group).check(body) {
        Verdict::Pass => Ok(()),
        Verdict::Blocked { rule_id } => {
            call.set_rule(rule_id);
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ContentBlocked,
                "This request was blocked by the operator's content rules.",
            ))
        }
        Verdict::Misconfigured => {
            tracing::error!(group = group.as_str(), "content screening rules do not compile; blocking");
            Err(ApiError::internal())
        }
    }
}

pub(crate) type ChannelCandidate = Arc<Candidate<Arc<dyn Provider>>>;

/// Phase 3: the channels that serve the model for this group, that the key may use, and
/// whose data policy the caller accepts, in the order to try them: the session's own
/// order when the client sent a session id (sticky routing), else weighted random.
/// Policy is a filter on the candidates, so no retry or fallback can ever leave it.
/// (Health is checked per attempt, in [`call_upstream`]: a half-open channel's single
/// trial must be claimed at the moment it is used.)
pub(crate) fn resolve(
    snapshot: &Snapshot,
    principal: &Principal,
    group: &GroupName,
    requirement: &PrivacyRequirement,
    routed: &RoutedRequest,
    session: Option<SessionKey>,
    call: &mut Call,
) -> Result<Vec<ChannelCandidate>, ApiError> {
    // A name the catalogue does not know is client text: it is not recorded.
    if snapshot.catalogue.model(&routed.model).is_some() {
        call.set_model(routed.model.clone());
    }
    if let Some(allowed) = &principal.key.models
        && !allowed.contains(&routed.model)
    {
        return Err(ApiError::model_not_found(routed.model.as_str()));
    }
    let serving = match session {
        Some(key) => snapshot.catalogue.candidates_for_session(&routed.model, group, key),
        None => snapshot.catalogue.candidates(&routed.model, group, &mut rand::rng()),
    };
    if serving.is_empty() {
        return Err(ApiError::model_not_found(routed.model.as_str()));
    }
    let mut unmet = None;
    let admitted: Vec<ChannelCandidate> = serving
        .into_iter()
        .filter(|candidate| match requirement.admits(&candidate.channel.policy) {
            Ok(()) => true,
            Err(constraint) => {
                unmet.get_or_insert(constraint);
                false
            }
        })
        .collect();
    match (admitted.is_empty(), unmet) {
        (true, Some(constraint)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PolicyUnsatisfiable,
            format!("No channel serving `{}` satisfies your privacy requirement: {constraint}.", routed.model.as_str()),
        )),
        _ => Ok(admitted),
    }
}

/// Phase 7: try the candidates in order; returns the outcome and the channel that
/// produced it (the last one tried). A channel cooling down, or at its own rate or
/// concurrency limit, is skipped; if every candidate is, the call fails with 503 (cooling)
/// or is rate limited. Each attempt's outcome feeds the health board; when to move on,
/// back off or wait out a `retry-after` is [`Failover`]'s to say.
async fn call_upstream(
    state: &AppState,
    candidates: &[ChannelCandidate],
    endpoint: Endpoint,
    routed: &RoutedRequest,
    body: &Arc<Map<String, Value>>,
    files: Option<&Arc<[veil_providers::FilePart]>>,
    call: &mut Call,
) -> (Result<UpstreamReply, ApiError>, Option<ChannelCandidate>) {
    let mut failover = Failover::new(&state.routing);
    let mut queue: std::collections::VecDeque<ChannelCandidate> = candidates.iter().cloned().collect();
    let mut last_error: Option<UpstreamError> = None;
    let mut channel_refusal: Option<veil_limits::Refusal> = None;
    let mut last_tried = None;
    while failover.may_attempt() {
        let Some(candidate) = queue.pop_front() else {
            // Used up: a channel that asked for a short wait gets one more try.
            let Some((candidate, ready_at)) = failover.retry_later() else { break };
            tokio::time::sleep_until(ready_at.into()).await;
            queue.push_back(candidate);
            continue;
        };
        let channel = &candidate.channel;
        let attempt = match state.health.admit(&channel.name).await {
            Ok(attempt) => attempt,
            Err(until) => {
                failover.note_cooling(until);
                continue;
            }
        };
        let demand = Demand {
            scope: Scope::Channel(channel.name.clone()),
            limits: Limits { rpm: channel.limits.rpm, tpm: None, max_concurrent: channel.limits.max_concurrent },
        };
        match state.limiter.admit(std::slice::from_ref(&demand), 0).await {
            Ok(admission) => call.admitted_to_channel(admission),
            Err(refusal) => {
                // Keep the refusal that frees up soonest, to tell the client when to retry.
                if channel_refusal.as_ref().is_none_or(|kept| refusal.retry_after < kept.retry_after) {
                    channel_refusal = Some(refusal);
                }
                continue;
            }
        }
        let pause = failover.begin_attempt();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let upstream_model = channel.upstream_model(&routed.model).clone();
        call.trying(channel.name.clone(), upstream_model.clone(), channel.policy.class());
        last_tried = Some(Arc::clone(&candidate));
        let request = UpstreamRequest {
            endpoint,
            body: Arc::clone(body),
            model: upstream_model,
            stream: routed.stream,
            files: files.cloned(),
        };
        let started = std::time::Instant::now();
        // A stream is committed to only once its first event arrived: until then another
        // channel can still take over (and the latency recorded is to that first event).
        let (result, before_first_event) = match candidate.attached.send(request).await {
            Ok(reply) => (reply.started().await, true),
            Err(error) => (Err(error), false),
        };
        attempt.finish(result.as_ref().map(|_| started.elapsed()));
        let error = match result {
            Ok(reply) => return (Ok(reply), last_tried),
            Err(error) => error,
        };
        if failover.after_failure(Arc::clone(&candidate), &error, before_first_event, channel.timeouts.total) {
            tracing::warn!(channel = channel.name.as_str(), error = %error, "upstream failed; trying the next channel");
            last_error = Some(error);
        } else {
            tracing::warn!(channel = channel.name.as_str(), error = %error, "upstream refused the call");
            return (Err(ApiError::from_upstream(&error)), last_tried);
        }
    }
    let error = match (last_error, channel_refusal) {
        (Some(error), _) => ApiError::from_upstream(&error),
        (None, Some(refusal)) => metering::rate_limited(&refusal),
        (None, None) => failover.cooling_error().unwrap_or_else(ApiError::internal),
    };
    (Err(error), last_tried)
}
