#!/usr/bin/env bash
# Self-test of the sipp scenarios in tests/sip/scenarios: runs each one against a sipp peer
# that plays Switchboard's side (a stand-in in this folder, or the matching scenario of the
# other direction), over UDP on 127.0.0.1. Positive pairs must both exit 0; negative pairs
# feed the scenario under test a wrong Switchboard behaviour and it must exit 1.
# Prints "PASS name" or "FAIL name (exit N)" per pair; exits 1 if any pair failed.
# Needs sipp 3.6.x (Debian: apt-get install -y sip-tester); no root (no media is played).
# Environment: SIPP (binary, default sipp), BASE_PORT (default 21000; uses BASE_PORT to
# BASE_PORT+599), KEEP=1 keeps the logs of a fully passing run (they are always kept when
# something fails, in the folder printed at the end).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SC=$(dirname "$HERE")
ST=$HERE
SIPP=${SIPP:-sipp}
BASE_PORT=${BASE_PORT:-21000}

command -v "$SIPP" >/dev/null || { echo "sipp not found: apt-get install -y sip-tester" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sipp-selftest.XXXXXX")
server_pid=""
cleanup() { if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT INT TERM

index=0
failed=0

# Wait until something listens on UDP 127.0.0.1:$1 (reads /proc/net/udp: no extra tools).
wait_udp() {
  local hex deadline=$((SECONDS + 5))
  hex=$(printf '%04X' "$1")
  while ! grep -qE " (0100007F|00000000):$hex " /proc/net/udp; do
    if (( SECONDS >= deadline )); then return 1; fi
    sleep 0.05
  done
}

# pair NAME MODE TESTED SERVER_XML "SERVER_ARGS" CLIENT_XML "CLIENT_ARGS"
#   MODE: pass = both sides must exit 0; fail = the TESTED side must exit 1 (a failed call)
#         after exchanging messages (a file that does not load also exits 1).
#   TESTED: server, client or both (which side is the scenario under test).
#   *_ARGS are extra sipp arguments, split like shell words (quotes allowed).
pair() {
  local name=$1 mode=$2 tested=$3 sxml=$4 sargs=$5 cxml=$6 cargs=$7
  local b=$((BASE_PORT + index * 20)) t dir s_rc c_rc
  index=$((index + 1))
  if [[ $mode == pass ]]; then t=20; else t=10; fi
  dir="$WORK/$name"; mkdir -p "$dir"
  local common=(-i 127.0.0.1 -m 1 -nostdin -timeout "$t" -timeout_error
                -trace_err -trace_msg -trace_logs -trace_screen)
  local sa ca
  eval "sa=($sargs)"; eval "ca=($cargs)"

  ( cd "$dir" && exec timeout -s KILL 60 "$SIPP" -sf "$sxml" "${common[@]}" \
      -p $((b + 1)) -mp $((b + 4)) -ci 127.0.0.1 -cp $((b + 12)) "${sa[@]}" \
      >server.out 2>server.err ) &
  server_pid=$!
  if ! wait_udp $((b + 1)); then
    kill "$server_pid" 2>/dev/null || true
  fi
  set +e
  ( cd "$dir" && exec timeout -s KILL 60 "$SIPP" -sf "$cxml" 127.0.0.1:$((b + 1)) "${common[@]}" \
      -p $((b + 2)) -mp $((b + 8)) -ci 127.0.0.1 -cp $((b + 13)) "${ca[@]}" \
      >client.out 2>client.err )
  c_rc=$?
  wait "$server_pid"
  s_rc=$?
  set -e
  server_pid=""

  local t_rc p_rc
  case $tested in
    server) t_rc=$s_rc; p_rc=$c_rc ;;
    client) t_rc=$c_rc; p_rc=$s_rc ;;
    *) if (( s_rc != 0 )); then t_rc=$s_rc; p_rc=$c_rc; else t_rc=$c_rc; p_rc=$s_rc; fi ;;
  esac
  if [[ $mode == pass ]]; then
    if (( t_rc == 0 && p_rc == 0 )); then
      echo "PASS $name"
    else
      if (( t_rc != 0 )); then echo "FAIL $name (exit $t_rc)"; else echo "FAIL $name (exit 0, peer exit $p_rc)"; fi
      echo "     logs: $dir"
      failed=1
    fi
  else
    # Required: exit 1 ("a call failed") AND a call really ran (sipp also exits 1 when a file
    # or option does not load); 255 (timeout), 254 (bind) are not the failure we want.
    local txml tbase why
    if [[ $tested == client ]]; then txml=$cxml; else txml=$sxml; fi
    tbase=$(basename "$txml" .xml)
    if (( t_rc == 1 )) && grep -qs "message received" "$dir/$tbase"_*_messages.log; then
      why=$(grep -hs -m1 -P '^\d{4}-\d\d-\d\d\t' "$dir/$tbase"_*_errors.log \
            | sed -E 's/^[^\t]*\t[^\t]*\t[0-9.]+: //' | cut -c1-110 || true)
      case $why in  # a regexp failure message spans the body: show the regexp instead
        "Failed regexp match"*|"Regexp matched but should not"*)
          why="${why%%:*}, $(grep -hs -o -m1 "with regexp '[^']*'" "$dir/$tbase"_*_errors.log || true)" ;;
      esac
      echo "PASS $name (exit 1: ${why:-call failed})"
    else
      echo "FAIL $name (exit $t_rc, exit 1 after a real call was required)"
      echo "     logs: $dir"
      failed=1
    fi
  fi
}

start=$SECONDS
echo "sipp: $("$SIPP" -v 2>&1 | grep -o 'v[0-9][^ ]*' | head -1 | sed 's/\.$//'); logs in $WORK"

# Outgoing calls: the scenario under test is the trunk (server); the peer plays Switchboard.
pair uas_answer        pass server "$SC/uas_answer.xml"       ""                      "$ST/sb_out_call.xml"       "-s +15550123"
pair uas_bye           pass server "$SC/uas_bye.xml"          ""                      "$ST/sb_out_wait_bye.xml"   "-s +15550123"
pair uas_bye_300ms     pass server "$SC/uas_bye.xml"          "-set hold_ms 300"      "$ST/sb_out_wait_bye.xml"   "-s +15550123"
pair uas_486           pass both   "$SC/uas_486.xml"          ""                      "$SC/uac_reject_486.xml"    "-s +15550123"
pair uas_603           pass both   "$SC/uas_603.xml"          ""                      "$SC/uac_reject_603.xml"    "-s +15550123"
pair uas_403           pass both   "$SC/uas_403.xml"          ""                      "$SC/uac_reject_403.xml"    "-s +15550123"
pair uas_404           pass both   "$SC/uas_404.xml"          ""                      "$SC/uac_unknown_number.xml" "-s +15550199"
pair uas_480           pass both   "$SC/uas_480.xml"          ""                      "$SC/uac_unanswered.xml"    "-s +15550123"
pair uas_500           pass server "$SC/uas_500.xml"          ""                      "$ST/sb_out_expect_500.xml" "-s +15550123"
pair uas_ring_forever  pass both   "$SC/uas_ring_forever.xml" ""                      "$SC/uac_cancel.xml"        "-s +15550123"
pair uas_silent        pass server "$SC/uas_silent.xml"       "-set silent_ms 4000"   "$ST/sb_out_no_answer.xml"  "-s +15550123"
pair uas_hold          pass server "$SC/uas_hold.xml"         ""                      "$ST/sb_out_hold.xml"       "-s +15550123"
pair uas_refer_ok      pass server "$SC/uas_refer_ok.xml"     ""                      "$ST/sb_out_refer.xml"      "-s +15550123"
pair uas_refer_fail    pass server "$SC/uas_refer_fail.xml"   ""                      "$ST/sb_out_refer.xml"      "-s +15550123 -set expect_frag 603"

# Incoming calls: the scenario under test is the caller (client); the peer plays Switchboard.
# (uac_reject_*, uac_unknown_number, uac_unanswered and uac_cancel ran above, against uas_*.)
pair uac_basic         pass client "$ST/sb_in_answer.xml"    ""                      "$SC/uac_basic.xml"         "-s +15550123"
pair uac_cancel_487_first pass client "$ST/sb_in_cancel_487_first.xml" ""            "$SC/uac_cancel.xml"        "-s +15550123 -set cancel_ms 100"
pair uac_redirect      pass client "$ST/sb_in_redirect.xml"  ""                      "$SC/uac_redirect.xml"      "-s +15550123"
pair uac_noack         pass client "$ST/sb_in_noack.xml"     "-max_retrans 2"        "$SC/uac_noack.xml"         "-s +15550123"
pair uac_hold          pass client "$ST/sb_in_hold.xml"      ""                      "$SC/uac_hold.xml"          "-s +15550123 -set hold_ms 500"
# uac_stream reads stream.ulaw (here 2 s of mu-law silence, 0xFF) from its folder as it loads.
mkdir -p "$WORK/uac_stream" && head -c 16000 /dev/zero | tr '\0' '\377' >"$WORK/uac_stream/stream.ulaw"
pair uac_stream        pass client "$ST/sb_in_answer.xml"    ""                      "$SC/uac_stream.xml"        "-s +15550123 -set hold_ms 500"

# Negative pairs: Switchboard misbehaves; the scenario under test must fail.
pair neg_uas_answer_offer_without_pcmu fail server "$SC/uas_answer.xml" ""        "$ST/sb_out_call.xml"         "-s +15550123 -set offer '8 101'"
pair neg_uas_486_no_ack                fail server "$SC/uas_486.xml"    "-max_retrans 2" "$ST/sb_out_486_no_ack.xml" "-s +15550123"
pair neg_uas_486_ack_new_branch        fail server "$SC/uas_486.xml"    ""        "$ST/sb_out_486_bad_ack.xml"  "-s +15550123"
pair neg_uas_silent_cancel_unanswered  fail server "$SC/uas_silent.xml" "-set silent_ms 4000" "$ST/sb_out_cancel_unanswered.xml" "-s +15550123"
pair neg_uas_hold_answer_sendrecv      fail server "$SC/uas_hold.xml"   ""        "$ST/sb_out_hold.xml"         "-s +15550123 -set hold_answer sendrecv"
pair neg_uas_hold_resume_recvonly      fail server "$SC/uas_hold.xml"   ""        "$ST/sb_out_hold.xml"         "-s +15550123 -set resume_answer recvonly"
pair neg_uas_ring_forever_cancel_new_branch fail server "$SC/uas_ring_forever.xml" "" "$ST/sb_out_cancel_new_branch.xml" "-s +15550123"
pair neg_uac_reject_603_got_486        fail client "$SC/uas_486.xml"    ""        "$SC/uac_reject_603.xml"      "-s +15550123"
pair neg_uac_basic_answer_without_pcmu fail client "$ST/sb_in_answer.xml" "-set answer '8 96'" "$SC/uac_basic.xml" "-s +15550123 -set hold_ms 200"
pair neg_uac_hold_answer_sendrecv      fail client "$ST/sb_in_hold.xml" "-set hold_answer sendrecv" "$SC/uac_hold.xml" "-s +15550123 -set hold_ms 200"
pair neg_uac_redirect_without_contact  fail client "$ST/sb_in_redirect.xml" "-set contact ''" "$SC/uac_redirect.xml" "-s +15550123"
pair neg_uac_video_other_streams_kept fail client "$ST/sb_in_answer.xml" "" "$SC/uac_video.xml" "-s +15550123 -set hold_ms 200"

echo "$index pairs in $((SECONDS - start)) s"
if (( failed )); then
  echo "FAILED; logs kept in $WORK"
  exit 1
fi
if [[ ${KEEP:-0} == 1 ]]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
