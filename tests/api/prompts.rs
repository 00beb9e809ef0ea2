//! Prompts that could exhaust the server: devices, FIFOs, `/proc` files, endless or huge http
//! bodies, files outside the prompt folder. Each is answered at once, from the WAV header alone,
//! or refused with a Graph error.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::config::Settings;

use crate::helpers::*;
use crate::incoming::{CALLS, act, op_id, op_queued, prompts, result_of, wait_op};

/// Plays `uri` on `id` and gives the answer and how long it took.
async fn play(app: &TestApp, token: &str, id: &str, uri: &str) -> (Resp, Duration) {
    let at = Instant::now();
    let r = act(
        app,
        token,
        id,
        "playPrompt",
        json!({"prompts": prompts(&[uri])}),
    )
    .await;
    (r, at.elapsed())
}

/// Plays `uri` and checks it runs for `secs` (virtual clock), no less.
async fn plays_for(app: &TestApp, token: &str, id: &str, uri: &str, secs: f64) {
    let (r, _) = play(app, token, id, uri).await;
    let op = op_id(app, id, &r);
    app.advance(secs - 0.1).await;
    assert!(
        !op_queued(app, id, &op).await,
        "{uri}: done before its {secs} s"
    );
    app.advance(0.1).await;
    let (_, done) = wait_op(app, id, &op).await;
    assert_eq!(
        (done["status"].as_str(), result_of(&done)),
        (Some("completed"), (200, 0)),
        "{uri}"
    );
}

/// A `400` Graph error whose message says `why`.
fn refused(r: &Resp, why: &str) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.graph_error().as_deref(), Some("BadRequest"), "{}", r.text);
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{message:?} should say {why:?}");
}

fn file_uri(path: &std::path::Path) -> String {
    format!("file://{}", path.display())
}

fn vm_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn file_prompts_come_only_from_the_prompt_folder() {
    let folder = TempDir::new();
    let elsewhere = TempDir::new();
    let app = spawn_app_with(Backend::Suite, &prompt_folder(&folder)).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;

    let inside = folder.0.join("three.wav");
    std::fs::write(&inside, wav_bytes(3.0)).unwrap();
    plays_for(&app, &token, &id, &file_uri(&inside), 3.0).await;
    // A link inside the folder to a file inside it is fine.
    let link_in = folder.0.join("again.wav");
    std::os::unix::fs::symlink(&inside, &link_in).unwrap();
    plays_for(&app, &token, &id, &file_uri(&link_in), 3.0).await;

    let outside = elsewhere.0.join("secret.wav");
    std::fs::write(&outside, wav_bytes(1.0)).unwrap();
    let (r, _) = play(&app, &token, &id, &file_uri(&outside)).await;
    refused(&r, "prompt folder");
    let (r, _) = play(&app, &token, &id, "file:///etc/passwd").await;
    refused(&r, "prompt folder");
    // A link in the folder that leads out of it.
    let link_out = folder.0.join("escape.wav");
    std::os::unix::fs::symlink(&outside, &link_out).unwrap();
    let (r, _) = play(&app, &token, &id, &file_uri(&link_out)).await;
    refused(&r, "prompt folder");
    // `..` is refused however it is spelt, even when it would land inside the folder.
    let name = folder.0.file_name().unwrap().to_str().unwrap();
    for dots in ["..", "%2e%2e", ".%2E"] {
        let uri = format!("file://{}/{dots}/{name}/three.wav", folder.0.display());
        let (r, _) = play(&app, &token, &id, &uri).await;
        refused(&r, "'..'");
    }
    // Several prompts: the answer says which one.
    let both = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&file_uri(&inside), &file_uri(&outside)])}),
    )
    .await;
    refused(&both, "Prompt 2 of 2");
    // Other schemes are not prompts.
    let (r, _) = play(&app, &token, &id, "ftp://127.0.0.1/hello.wav").await;
    refused(&r, "https, http or file");
    let (r, _) = play(&app, &token, &id, "not a url").await;
    refused(&r, "not a URL");
}

#[tokio::test]
async fn without_a_setting_the_prompt_folder_is_the_config_files_folder_and_empty_turns_it_off() {
    let dir = TempDir::new();
    let other = TempDir::new();
    let config = dir.0.join("switchboard.toml");
    let app = spawn_app_from(Backend::Suite, |incoming| {
        std::fs::write(&config, config_toml_with("", Some(incoming))).unwrap();
        Settings::from_file(&config).unwrap()
    })
    .await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let beside = dir.0.join("three.wav");
    std::fs::write(&beside, wav_bytes(3.0)).unwrap();
    plays_for(&app, &token, &id, &file_uri(&beside), 3.0).await;
    let away = other.0.join("one.wav");
    std::fs::write(&away, wav_bytes(1.0)).unwrap();
    let (r, _) = play(&app, &token, &id, &file_uri(&away)).await;
    refused(&r, "prompt folder");

    let off = spawn_app_with(Backend::Suite, "[media]\nprompt_folder = \"\"\n").await;
    let token = off.token().await;
    let id = off.answered(&token, ALICE).await;
    let (r, _) = play(&off, &token, &id, &file_uri(&beside)).await;
    refused(&r, "turned off");
}

#[tokio::test]
async fn devices_and_proc_files_are_answered_at_once_without_reading_them() {
    // Even with the whole file system as prompt folder.
    let app = spawn_app_with(Backend::Suite, "[media]\nprompt_folder = \"/\"\n").await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let before = vm_rss_kb();
    for device in ["file:///dev/zero", "file:///dev/urandom"] {
        let (r, took) = play(&app, &token, &id, device).await;
        refused(&r, "not a regular file");
        assert!(took < Duration::from_secs(2), "{device} took {took:?}");
    }
    let grew_mb = vm_rss_kb().saturating_sub(before) / 1024;
    assert!(grew_mb < 100, "the server grew by {grew_mb} MB");
    // The test's own stdout: a pipe, a terminal or a file, depending on how it runs; whichever,
    // the answer comes at once (a refusal, or the default duration for what is no WAV file).
    let (r, took) = play(&app, &token, &id, "file:///proc/self/fd/1").await;
    assert!(took < Duration::from_secs(2), "took {took:?}: {}", r.text);
    assert!(r.status == 200 || r.status == 400, "{}", r.text);

    // The default folder (the working directory here) holds neither.
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    for uri in ["file:///dev/zero", "file:///proc/self/fd/1"] {
        let (r, took) = play(&app, &token, &id, uri).await;
        refused(&r, "prompt folder");
        assert!(took < Duration::from_secs(2), "{uri} took {took:?}");
    }
}

/// Opens a FIFO for writing and closes it, so readers blocked on it (the code before this fix)
/// get an end of file instead of waiting forever.
fn release(fifo: &std::path::Path) {
    for _ in 0..50 {
        if let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(fifo)
        {
            drop(f);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_prompts_naming_a_fifo_do_not_hold_up_creates() {
    let folder = TempDir::new();
    let fifo = folder.0.join("pipe.wav");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let app = std::sync::Arc::new(spawn_app_with(Backend::Sqlite, &prompt_folder(&folder)).await);
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let uri = file_uri(&fifo);
    let mut plays = tokio::task::JoinSet::new();
    for _ in 0..520 {
        let (app, token, id, uri) = (app.clone(), token.clone(), id.clone(), uri.clone());
        plays.spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), play(&app, &token, &id, &uri))
                .await
                .map(|(r, _)| r)
        });
    }
    // Time for every request to reach the server (on the code before the fix, to block in it:
    // 517 threads then, and the create timed out).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let create = tokio::time::timeout(Duration::from_secs(5), async {
        app.send("POST", CALLS, Some(&token), Some(app.p2p(PHONE)))
            .await
    })
    .await;
    let answers = tokio::time::timeout(Duration::from_secs(10), async {
        let mut all = vec![];
        while let Some(r) = plays.join_next().await {
            all.push(r.unwrap());
        }
        all
    })
    .await;
    release(&fifo);
    let create = create.expect("a create answers while prompts name a FIFO");
    assert_eq!(create.status, 201, "{}", create.text);
    let answers = answers.expect("every playPrompt is answered");
    for r in answers {
        refused(&r.expect("answered"), "not a regular file");
    }
}

#[tokio::test]
async fn a_huge_http_prompt_is_timed_by_its_header_and_not_read_on() {
    // One hour of 48 kHz stereo: 691 MB declared and promised by Content-Length.
    let data_len: u32 = 3600 * 192_000;
    let server = EndlessPrompt::start(
        wav_header(48_000, 2, 16, data_len),
        Some(44 + data_len as u64),
    )
    .await;
    let app = spawn_app_with(
        Backend::Suite,
        "[calls]\nkeep_alive_timeout_secs = 100000\n",
    )
    .await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let (r, took) = play(&app, &token, &id, &server.url).await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let op = op_id(&app, &id, &r);
    assert!(server.wait_hung_up(3).await, "the fetch stopped");
    let written = server.written();
    assert!(written < 32 << 20, "{written} bytes were sent");
    app.advance(3599.9).await;
    assert!(!op_queued(&app, &id, &op).await, "done before its hour");
    app.advance(0.1).await;
    let (_, done) = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "completed");
}

#[tokio::test]
async fn an_http_prompt_without_a_length_is_read_only_up_to_the_cap() {
    let server = EndlessPrompt::start(wav_header(16_000, 1, 16, 3600 * 32_000), None).await;
    let app = spawn_app_with(Backend::Suite, "[media]\nmax_prompt_bytes = 1000000\n").await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let (r, took) = play(&app, &token, &id, &format!("{}?sig=SECRET", server.url)).await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let op = op_id(&app, &id, &r);
    assert!(server.wait_hung_up(3).await, "the fetch stopped");
    let written = server.written();
    assert!(written < 32 << 20, "{written} bytes were sent");
    // Too large to tell: it could not be had, and the operation fails at once.
    fails(&app, &id, &op, (400, 8536)).await;
}

/// Checks operation `op` fails with `result` with the call clock standing still.
async fn fails(app: &TestApp, id: &str, op: &str, result: (i64, i64)) {
    let (_, done) = wait_op(app, id, op).await;
    assert_eq!(
        (done["status"].as_str(), result_of(&done)),
        (Some("failed"), result),
        "{done}"
    );
}

#[tokio::test]
async fn a_prompt_that_cannot_be_had_fails_its_operation_after_the_prompts_before_it() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let good = app.receiver.serve("one.wav", {
        let mut w = wav_header(8_000, 1, 16, 16_000);
        w.resize(w.len() + 16_000, 0);
        w
    });
    let missing = app.receiver.url_for("/files/nowhere.wav");
    let text = app
        .receiver
        .serve("text.wav", b"hello, not a wave".to_vec());
    // A missing file: 400/8536 once the one-second prompt before it has played.
    let r = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&good, &missing, &good])}),
    )
    .await;
    let op = op_id(&app, &id, &r);
    assert_eq!(r.body["status"], "running", "{}", r.text);
    app.advance(0.9).await;
    assert!(!op_queued(&app, &id, &op).await, "failed before its turn");
    app.advance(0.1).await;
    fails(&app, &id, &op, (400, 8536)).await;
    // Not audio: 400/8535, at once. A recording whose prompt cannot be had records nothing.
    let r = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&text])}),
    )
    .await;
    fails(&app, &id, &op_id(&app, &id, &r), (400, 8535)).await;
    let r = act(
        &app,
        &token,
        &id,
        "recordResponse",
        json!({"prompts": prompts(&[&missing])}),
    )
    .await;
    let op = op_id(&app, &id, &r);
    fails(&app, &id, &op, (400, 8536)).await;
    let (_, done) = wait_op(&app, &id, &op).await;
    assert_eq!(done["recordingLocation"], "", "{done}");
    let message = done["resultInfo"]["message"].as_str().unwrap_or_default();
    assert_eq!(message, "Action failed, file could not be downloaded.");
}

#[tokio::test]
async fn an_http_prompt_that_does_not_answer_gives_up_at_the_fetch_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/never.wav", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut socks = vec![];
        while let Ok((s, _)) = silent.accept().await {
            socks.push(s);
        }
    });
    let app = spawn_app_with(Backend::Suite, "[media]\nfetch_timeout_secs = 0.5\n").await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let (r, took) = play(&app, &token, &id, &url).await;
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    let op = op_id(&app, &id, &r);
    fails(&app, &id, &op, (400, 8536)).await;
    held.abort();
}

#[tokio::test]
async fn an_8_khz_stereo_prompt_plays_for_its_own_duration_from_a_file_or_over_http() {
    // 8 kHz, stereo, 8-bit: 16,000 bytes a second, half the rate of the usual 16 kHz mono.
    let mut wav = wav_header(8_000, 2, 8, 32_000);
    wav.resize(wav.len() + 32_000, 0x80);
    let folder = TempDir::new();
    let path = folder.0.join("stereo.wav");
    std::fs::write(&path, &wav).unwrap();
    let app = spawn_app_with(Backend::Suite, &prompt_folder(&folder)).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let served = app.receiver.serve("stereo.wav", wav);
    plays_for(&app, &token, &id, &file_uri(&path), 2.0).await;
    plays_for(&app, &token, &id, &served, 2.0).await;
}

#[tokio::test]
async fn the_callback_policy_refuses_prompts_it_would_not_call() {
    // Under the strict policy no notification can reach a loopback receiver (nor may an
    // incoming_call_uri name one), so the bot's call is outgoing, with an https callback.
    let app = spawn_app_from(Backend::Suite, |_| {
        let toml = config_toml_with("[callbacks]\nstrict = true\nforbid_private = true\n", None);
        Settings::from_toml(&toml).unwrap()
    })
    .await;
    let token = app.token().await;
    let mut body = app.p2p(ALICE);
    body["callbackUri"] = "https://bot.example.com/callback".into();
    let c = app
        .send(
            "POST",
            "/v1.0/communications/calls",
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.text);
    let id = c.body["id"].as_str().unwrap().to_string();
    app.advance(5.0).await;
    let g = app
        .send(
            "GET",
            &format!("/v1.0/communications/calls/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(g.body["state"], "established", "{}", g.text);
    let (r, _) = play(
        &app,
        &token,
        &id,
        &app.receiver.serve("a.wav", wav_bytes(1.0)),
    )
    .await;
    refused(&r, "only over https");
    let (r, _) = play(&app, &token, &id, "https://127.0.0.1/a.wav").await;
    refused(&r, "loopback, private or link-local");
    let (r, _) = play(&app, &token, &id, "file:///etc/passwd").await;
    refused(&r, "strict");
}

#[tokio::test]
async fn a_party_whose_record_wav_is_a_fifo_is_recorded_at_once() {
    const FIFO_PARTY: &str = "5e9f0000-0000-4000-8000-000000000041";
    let folder = TempDir::new();
    let fifo = folder.0.join("voice.wav");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let party = format!(
        "[[parties]]\nid = \"{FIFO_PARTY}\"\nkind = \"user\"\nbehavior = \"answer\"\nrecord_wav = {:?}\n\n",
        fifo.display().to_string()
    );
    let app = spawn_app_with(Backend::Suite, &party).await;
    let token = app.token().await;
    let id = app.answered(&token, FIFO_PARTY).await;
    let at = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        act(
            &app,
            &token,
            &id,
            "recordResponse",
            json!({"maxRecordDurationInSeconds": 2}),
        ),
    )
    .await;
    release(&fifo);
    let r = r.expect("recordResponse answers");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(at.elapsed() < Duration::from_secs(2));
    let op = op_id(&app, &id, &r);
    app.advance(3.0).await;
    let (_, done) = wait_op(&app, &id, &op).await;
    let location = done["recordingLocation"].as_str().unwrap().to_string();
    let wav = tokio::time::timeout(
        Duration::from_secs(5),
        app.http
            .get(location)
            .bearer_auth(done["recordingAccessToken"].as_str().unwrap())
            .send(),
    )
    .await;
    release(&fifo);
    let wav = wav.expect("the recording is served").unwrap();
    assert_eq!(wav.status(), 200);
}

#[tokio::test]
async fn prompts_and_recordings_asked_through_beta_say_why_they_ended() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let one = app.receiver.serve("one.wav", wav_bytes(1.0));
    let beta = |action: &str, body: Value| {
        let (app, token, path) = (
            &app,
            &token,
            format!("/beta/communications/calls/{id}/{action}"),
        );
        async move { app.send("POST", &path, Some(token), Some(body)).await }
    };
    // Running: the property is there, null.
    let r = beta("playPrompt", json!({"prompts": prompts(&[&one])})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["completionReason"], Value::Null, "{}", r.text);
    assert!(r.body.as_object().unwrap().contains_key("completionReason"));
    let beta_op = |r: &Resp| {
        let op = r.body["id"].as_str().expect("an operation").to_string();
        let location = r.headers["location"].to_str().unwrap().to_string();
        assert!(
            location.ends_with(&format!("/beta/communications/calls/{id}/operations/{op}")),
            "{location}"
        );
        op
    };
    let played = beta_op(&r);
    app.advance(1.0).await;
    let (_, done) = wait_op(&app, &id, &played).await;
    assert_eq!(done["completionReason"], "completedSuccessfully", "{done}");

    let r = beta("recordResponse", json!({"maxRecordDurationInSeconds": 1})).await;
    let recorded = beta_op(&r);
    app.advance(1.5).await;
    let (_, done) = wait_op(&app, &id, &recorded).await;
    assert_eq!(
        (done["completionReason"].as_str(), result_of(&done)),
        (Some("maxRecordDurationReached"), (200, 8515)),
        "{done}"
    );

    let r = beta("recordResponse", json!({"maxRecordDurationInSeconds": 60})).await;
    let cancelled = beta_op(&r);
    act(&app, &token, &id, "cancelMediaProcessing", json!({})).await;
    let (_, done) = wait_op(&app, &id, &cancelled).await;
    assert_eq!(done["completionReason"], "operationCanceled", "{done}");

    // v1.0 has no such property.
    let r = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&one])}),
    )
    .await;
    assert!(
        !r.body.as_object().unwrap().contains_key("completionReason"),
        "{}",
        r.text
    );
    let op = op_id(&app, &id, &r);
    app.advance(1.0).await;
    let (_, done) = wait_op(&app, &id, &op).await;
    assert!(done.get("completionReason").is_none(), "{done}");
}
