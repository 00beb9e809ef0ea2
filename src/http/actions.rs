//! Actions on a call: answer, reject, redirect, transfer, and the operations (prompts,
//! recordings, tones, mute, recording status, screen sharing).
//!
//! Each handler first finds the call (so an ended call answers 404 whatever the body), then reads
//! the body leniently, then asks the engine.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{
    GraphCall, bool_or, call_id, check_callback_policy, client_context, enum_value, int_in,
};
use super::respond::operation_response;
use super::route::Action;
use super::state::AppState;
use crate::domain::operation::{Operation, PromptPlan, RecordPlan, results, tone_key};
use crate::domain::{EndReason, Peer};
use crate::graph::call::{parse_callback_uri, parse_media_config, parse_modalities, parse_target};
use crate::media::prompts::PromptError;
use crate::media::recordings;

fn optional_callback(state: &AppState, body: &Value) -> Result<Option<String>, ApiError> {
    match body.get("callbackUri") {
        None | Some(Value::Null) => Ok(None),
        v => {
            let uri = parse_callback_uri(v).map_err(|e| ApiError::bad_request(e.0))?;
            check_callback_policy(&state.settings.callbacks, &uri)?;
            Ok(Some(uri))
        }
    }
}

/// One prompt: its URI and how long it plays, or what its operation fails with when it cannot
/// be had (logged). A prompt the server's policy refuses is `400`.
async fn prompt_ms(
    state: &AppState,
    prompt: &Value,
    which: &str,
) -> Result<(String, Result<u64, EndReason>), ApiError> {
    let uri = prompt["mediaInfo"]["uri"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Each prompt needs a mediaInfo with a uri."))?;
    let ms = match state.prompts.duration_ms(&state.http, uri).await {
        Ok(ms) => Ok(ms),
        Err(PromptError::Refused(why)) => {
            return Err(ApiError::bad_request(format!("{which}: {why}")));
        }
        Err(e) => {
            let failure = e.failure().unwrap_or(results::PROMPT_UNAVAILABLE);
            tracing::warn!(
                "prompt {}: {e}; its operation fails {}/{}",
                crate::media::prompts::redact(uri),
                failure.code,
                failure.subcode
            );
            Err(failure)
        }
    };
    Ok((uri.to_string(), ms))
}

/// The prompts of a media action: those before the first that cannot be had, how long they
/// play, and what the operation fails with if one cannot.
async fn prompts_ms(
    state: &AppState,
    body: &Value,
    max: usize,
    required: bool,
) -> Result<PromptPlan, ApiError> {
    let list = match &body["prompts"] {
        Value::Null if !required => return Ok(PromptPlan::default()),
        Value::Array(a) => a,
        _ => {
            return Err(ApiError::bad_request(
                "prompts must be an array of mediaPrompt.",
            ));
        }
    };
    if required && list.is_empty() {
        return Err(ApiError::bad_request(
            "prompts must hold at least one mediaPrompt.",
        ));
    }
    if list.len() > max {
        return Err(ApiError::bad_request(format!(
            "At most {max} prompts may be given."
        )));
    }
    let mut plan = PromptPlan::default();
    // Every prompt is checked (a refused one refuses the request), even after one failed.
    for (i, p) in list.iter().enumerate() {
        let which = if list.len() == 1 {
            "The prompt".to_string()
        } else {
            format!("Prompt {} of {}", i + 1, list.len())
        };
        let (uri, ms) = prompt_ms(state, p, &which).await?;
        match ms {
            _ if plan.failure.is_some() => {}
            Ok(ms) => {
                plan.uris.push(uri);
                plan.ms += ms;
            }
            Err(failure) => plan.failure = Some(failure),
        }
    }
    Ok(plan)
}

fn targets(body: &Value, name: &str) -> Result<Vec<Peer>, ApiError> {
    let list = match &body[name] {
        Value::Array(a) if !a.is_empty() => a.clone(),
        Value::Object(_) => vec![body[name].clone()],
        _ => {
            return Err(ApiError::bad_request(format!(
                "{name} must name at least one invitationParticipantInfo."
            )));
        }
    };
    list.iter()
        .map(|t| {
            parse_target(t)
                .map(|(p, _)| p)
                .map_err(|e| ApiError::bad_request(e.0))
        })
        .collect()
}

pub async fn run(
    cx: &GraphCall,
    id: &str,
    action: Action,
    body: Value,
) -> Result<Response, ApiError> {
    let (state, principal, app) = (&cx.state, &cx.principal, &cx.app);
    let call = cx.owned_call(id).await?;
    let cid = call.id;
    let e = &state.engine;
    let me = app.app_id.as_str();
    let accepted = || Ok(StatusCode::ACCEPTED.into_response());
    let op = |op: Operation| Ok(operation_response(cx, cid, &op));
    match action {
        Action::KeepAlive => {
            e.keep_alive(me, cid).await?;
            Ok(StatusCode::OK.into_response())
        }
        Action::Answer => {
            let callback = optional_callback(state, &body)?;
            if !body["acceptedModalities"].is_null() {
                parse_modalities(body.get("acceptedModalities"))
                    .map_err(|e| ApiError::bad_request(e.0))?;
            }
            let (media, app_hosted) = parse_media_config(body.get("mediaConfig"))
                .map_err(|e| ApiError::bad_request(e.0))?;
            if app_hosted && !principal.has_role("Calls.AccessMedia.All") {
                return Err(ApiError::forbidden(
                    "7504",
                    "Insufficient enterprise tenant permissions, cannot access this API. To answer with app-hosted media the application needs the Calls.AccessMedia.All application permission.",
                ));
            }
            let options = body.get("callOptions").filter(|o| !o.is_null()).cloned();
            let delta = crate::graph::call::delta_roster(options.as_ref())
                .map_err(|e| ApiError::bad_request(e.0))?;
            e.answer(
                me,
                cid,
                callback,
                media,
                app_hosted,
                options.map(|o| (o, delta)),
            )
            .await?;
            accepted()
        }
        Action::Reject => {
            let reason = match enum_value(&body, "reason", &["none", "busy", "forbidden"])? {
                Some("busy") => EndReason::BUSY,
                Some("forbidden") => EndReason::REJECTED_FORBIDDEN,
                _ => EndReason::DECLINED,
            };
            let callback = optional_callback(state, &body)?;
            e.reject(me, cid, reason, callback).await?;
            accepted()
        }
        Action::Redirect => {
            let to = targets(&body, "targets")?;
            if to.len() > 25 {
                return Err(ApiError::bad_request(
                    "At most 25 redirect targets may be given.",
                ));
            }
            let default = if to.len() == 1 { 55 } else { 60 };
            let timeout = int_in(&body, "timeout", default, 15, 90)?;
            let callback = optional_callback(state, &body)?;
            e.redirect(me, cid, to, chrono::Duration::seconds(timeout), callback)
                .await?;
            accepted()
        }
        Action::Transfer => {
            let to = targets(&body, "transferTarget")?;
            // A consultative transfer names the call the bot consulted the target in.
            match &body["transferTarget"]["replacesCallId"] {
                Value::Null => e.transfer(me, cid, to[0].clone()).await?,
                Value::String(r) if r.trim().is_empty() => {
                    e.transfer(me, cid, to[0].clone()).await?
                }
                Value::String(r) => {
                    let old = crate::domain::CallId::parse(r).ok_or_else(|| {
                        ApiError::bad_request(format!("replacesCallId '{r}' is not a call id."))
                    })?;
                    e.transfer_replacing(me, cid, to[0].clone(), old).await?
                }
                _ => return Err(ApiError::bad_request("replacesCallId must be a string.")),
            };
            accepted()
        }
        Action::PlayPrompt => {
            let ctx = client_context(&body)?;
            let mut prompts = prompts_ms(state, &body, 20, true).await?;
            // `loop` (beta): over and over until cancelled.
            prompts.looped = bool_or(&body, "loop", false)?;
            prompts.beta = cx.target.version == "beta";
            op(e.play_prompt(me, cid, ctx, prompts).await?)
        }
        Action::RecordResponse => {
            let ctx = client_context(&body)?;
            let prompts = prompts_ms(state, &body, 1, false).await?;
            let stop_tones = match &body["stopTones"] {
                Value::Null => vec![],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    return Err(ApiError::bad_request(
                        "stopTones must be an array of strings.",
                    ));
                }
            };
            let speaker = e.speaker(me, cid).await?;
            let speech = speaker.and_then(|p| state.parties.get(&p.id).map(|p| p.speech.clone()));
            let (speech_ms, source_wav) = recordings::speech(&state.prompts, speech).await;
            let plan = RecordPlan {
                prompt_ms: prompts.ms,
                prompt_failure: prompts.failure,
                max_record_ms: int_in(&body, "maxRecordDurationInSeconds", 5, 1, 120)? as u64
                    * 1000,
                max_silence_ms: int_in(&body, "maxSilenceTimeoutInSeconds", 5, 1, 120)? as u64
                    * 1000,
                initial_silence_ms: int_in(&body, "initialSilenceTimeoutInSeconds", 5, 1, 120)?
                    as u64
                    * 1000,
                play_beep: bool_or(&body, "playBeep", true)?,
                stop_tones,
                barge_in: bool_or(&body, "bargeInAllowed", false)?,
                speech_ms,
                source_wav,
                access_token: recordings::access_token(),
                beta: cx.target.version == "beta",
            };
            op(e.record(me, cid, ctx, prompts.uris, plan).await?)
        }
        Action::CancelMediaProcessing => {
            op(e.cancel_media(me, cid, client_context(&body)?).await?)
        }
        Action::SubscribeToTone => {
            let ctx = client_context(&body)?;
            op(e.subscribe_to_tone(me, cid, ctx).await?)
        }
        Action::SendDtmfTones => {
            let ctx = client_context(&body)?;
            let keys: String = match &body["tones"] {
                Value::Array(a) if !a.is_empty() => a
                    .iter()
                    .map(|t| t.as_str().and_then(tone_key).filter(|k| *k != '!'))
                    .collect::<Option<String>>()
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "tones must be tone values such as tone1, star or pound.",
                        )
                    })?,
                _ => return Err(ApiError::bad_request("tones must name at least one tone.")),
            };
            let delay = int_in(&body, "delayBetweenTonesMs", 200, 0, 10_000)? as u64;
            op(e.send_dtmf(me, cid, ctx, keys, delay).await?)
        }
        Action::Mute | Action::Unmute => {
            let ctx = client_context(&body)?;
            op(e.mute_self(me, cid, ctx, action == Action::Mute).await?)
        }
        Action::UpdateRecordingStatus => {
            let ctx = client_context(&body)?;
            let status = enum_value(&body, "status", &["notRecording", "recording", "failed"])?
                .ok_or_else(|| {
                    ApiError::bad_request("status is required: notRecording, recording or failed.")
                })?;
            op(e.update_recording_status(me, cid, ctx, status).await?)
        }
        Action::ChangeScreenSharingRole => {
            let role = enum_value(&body, "role", &["viewer", "sharer"])?
                .ok_or_else(|| ApiError::bad_request("role is required: viewer or sharer."))?;
            e.change_screen_sharing_role(me, cid, role).await?;
            accepted()
        }
        Action::AddLargeGalleryView => {
            Err(ApiError::not_implemented("The addLargeGalleryView action"))
        }
    }
}

/// `GET .../calls/{id}/operations/{opId}`: an operation still running.
pub async fn get_operation(cx: &GraphCall, id: &str, op_id: &str) -> Result<Response, ApiError> {
    let cid = call_id(id)?;
    let op = cx
        .state
        .engine
        .get_operation(&cx.app.app_id, cid, op_id)
        .await
        .map_err(|_| ApiError::not_found("Operation not found; it finished or never existed."))?;
    Ok(operation_response(cx, cid, &op))
}
