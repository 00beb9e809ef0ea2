#!/usr/bin/env python3
"""Crash-safety (SIGKILL) campaign against a Switchboard release binary.

Drives create -> (wait established) -> DELETE lifecycles at a few hundred per second against
`switchboard serve` on a SQLite store, SIGKILLs the server at chosen moments (steady load, right
after bursts, while the WAL is near its limit / being restarted / being backfilled, right after a
restart, during start-up), restarts it on the same store and port, and at the end checks every
acknowledged state against what the callback receiver got and what the server answers.

Run (needs the release builds: `cargo build --release -p switchboard -p switchboard-bench`):
    scripts/chaos/run.sh [--kills 30] [--rate 300]
run.sh makes a virtualenv under target/chaos-venv with requirements.txt and runs this script.
The server is target/release/switchboard (--server-bin); its configuration is what
`target/release/bench print-config` prints (--bench-bin), unless --config is given.
Everything (server config and logs, receiver log, acks log, report.json) goes to a fresh
temporary directory, or to --run-dir. Exit status 1 on any loss, resurrection, 5xx, reused
sequence number, or panic/corrupt/malformed server log line. See docs/CRASH-SAFETY.md.
Only loopback is used.
"""

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import aiohttp
from aiohttp import web

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))  # scripts/chaos -> repository root
TENANT = "b3c40000-0000-4000-8000-0000000000e1"
APP = "b3c40000-0000-4000-8000-000000000a01"
SECRET = "bench-secret"
PARTY = "b3c40000-0000-4000-8000-0000000000b1"
ADMIN = "bench-admin-token"
WAL_LIMIT = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Callback receiver (its own process): answers 202, appends every notification to a JSONL file,
# and sends a UDP hint "callId state" to the driver (hints only; the file is the truth).
# --------------------------------------------------------------------------------------------

def receiver_main(out_path, udp_port, port_q, fixed_port):
    async def run():
        out = open(out_path, "a", buffering=1 << 20)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setblocking(False)
        posts = 0

        outage = {"until": 0.0}

        async def ctl_outage(request):
            secs = float((await request.json())["secs"])
            outage["until"] = time.time() + secs
            return web.json_response({"until": outage["until"]})

        async def handle(request):
            nonlocal posts
            raw = await request.read()
            t = time.time()
            if t < outage["until"]:
                # a receiver outage: refused, so not received; the server must retry it
                out.write(json.dumps({"t": t, "refused": request.headers.get("Switchboard-Notification-Sequence")}) + "\n")
                return web.Response(status=503)
            posts += 1
            try:
                body = json.loads(raw)
                items = body.get("value", [])
            except Exception as e:  # noqa: BLE001
                out.write(json.dumps({"t": t, "bad": repr(e), "raw": raw[:500].decode("utf-8", "replace")}) + "\n")
                return web.Response(status=202)
            seqh = request.headers.get("Switchboard-Notification-Sequence")
            seqs = [s.strip() for s in seqh.split(",")] if seqh else []
            for i, n in enumerate(items):
                rd = n.get("resourceData")
                url = n.get("resourceUrl") or ""
                cid = None
                m = re.search(r"/calls/([0-9a-fA-F-]{36})", url)
                if m:
                    cid = m.group(1).lower()
                state = rd.get("state") if isinstance(rd, dict) else None
                ri = rd.get("resultInfo") if isinstance(rd, dict) else None
                rec = {
                    "t": t, "p": posts, "c": cid,
                    "q": int(seqs[i]) if i < len(seqs) and seqs[i].isdigit() else None,
                    "ct": n.get("changeType"), "s": state,
                    "e": rd.get("@odata.etag") if isinstance(rd, dict) else None,
                    "rc": ri.get("code") if isinstance(ri, dict) else None,
                    "rs": ri.get("subcode") if isinstance(ri, dict) else None,
                    "i": i, "n": len(items),
                    "u": url if not url.startswith("/communications/calls/") or url.count("/") > 3 else None,
                }
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")
                if cid and state:
                    try:
                        udp.sendto(f"{cid} {state}".encode(), ("127.0.0.1", udp_port))
                    except OSError:
                        pass
            return web.Response(status=202)

        async def flusher():
            while True:
                await asyncio.sleep(0.2)
                out.flush()

        app = web.Application(client_max_size=8 << 20)
        app.router.add_route("POST", "/_ctl/outage", ctl_outage)
        app.router.add_route("POST", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", fixed_port, backlog=1024, reuse_address=True)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        port_q.put(port)
        asyncio.get_running_loop().create_task(flusher())
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        out.flush()
        out.close()
        await runner.cleanup()

    asyncio.run(run())


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read_shm(path):
    """(szPage, mxFrame, nBackfill, nBackfillAttempted) from the WAL index, or None.
    Read as plain bytes: no SQLite connection, so nothing pins a snapshot."""
    try:
        with open(path, "rb") as f:
            b = f.read(136)
    except OSError:
        return None
    if len(b) < 136:
        return None
    sz = struct.unpack_from("<H", b, 14)[0]
    sz = 65536 if sz == 1 else sz
    mx = struct.unpack_from("<I", b, 16)[0]
    nb = struct.unpack_from("<I", b, 96)[0]
    nba = struct.unpack_from("<I", b, 128)[0]
    return sz, mx, nb, nba


def fsize(p):
    try:
        return os.path.getsize(p)
    except OSError:
        return None


class Limiter:
    def __init__(self, rate):
        self.rate = rate
        self.next = time.monotonic()

    async def acquire(self):
        now = time.monotonic()
        if self.next < now - 0.05:
            self.next = now
        t = self.next
        self.next += 1.0 / self.rate
        if t > now:
            await asyncio.sleep(t - now)


class UdpHints(asyncio.DatagramProtocol):
    def __init__(self, camp):
        self.camp = camp

    def datagram_received(self, data, addr):
        try:
            cid, state = data.decode().split()
        except ValueError:
            return
        if state == "established":
            self.camp.established.add(cid)
            ev = self.camp.waiters.get(cid)
            if ev:
                ev.set()


# --------------------------------------------------------------------------------------------
# The campaign
# --------------------------------------------------------------------------------------------

class Campaign:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.dir = args.run_dir
        self.db = os.path.join(self.dir, "sb.db")
        self.wal = self.db + "-wal"
        self.shm = self.db + "-shm"
        self.proc = None
        self.base = None
        self.port = 0
        self.gen = 0  # server generation (one per start)
        self.up = asyncio.Event()
        self.stop_load = False
        self.session = None
        self.old_sessions = []
        self.token = None
        self.limiter = Limiter(args.rate)
        self.established = set()
        self.waiters = {}
        self.calls = {}  # cid -> record
        self.stats = collections.Counter()
        self.status_5xx = []  # (t, method, status, body)
        self.unexpected = []  # other unexpected statuses
        self.kills = []
        self.restarts = []
        self.wal_max = 0
        self.wal_max_at = None
        self.wal_samples = []
        self.findings = collections.defaultdict(list)
        self.acks = open(os.path.join(self.dir, "acks.jsonl"), "a", buffering=1 << 16)
        self.t0 = time.time()
        self.server_log_paths = []
        self.final = False

    # ---- logging -------------------------------------------------------------------------
    def ev(self, kind, **kw):
        kw["t"] = round(time.time(), 4)
        kw["k"] = kind
        kw["g"] = self.gen
        self.acks.write(json.dumps(kw, separators=(",", ":")) + "\n")

    def say(self, msg):
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        with open(os.path.join(self.dir, "campaign.log"), "a") as f:
            f.write(line + "\n")

    # ---- server process -------------------------------------------------------------------
    async def start_server(self, port, wait_ready=True, tag=""):
        self.gen += 1
        logp = os.path.join(self.dir, f"server-{self.gen:02d}{tag}.log")
        self.server_log_paths.append(logp)
        logf = open(logp, "ab")
        env = dict(os.environ, SWITCHBOARD_LOG="info")
        env.pop("SWITCHBOARD_ADMIN_TOKEN", None)
        t = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            self.a.binary, "serve", "--listen", f"127.0.0.1:{port}",
            "--store", f"sqlite://{self.db}", "--config", self.a.config,
            stdout=asyncio.subprocess.PIPE, stderr=logf, env=env)
        logf.close()
        self.proc = proc
        if not wait_ready:
            return proc, None
        try:
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
                if not line:
                    await proc.wait()
                    return proc, f"exited {proc.returncode} before ready"
                s = line.decode(errors="replace").strip()
                if s.startswith("switchboard listening on "):
                    self.base = s[len("switchboard listening on "):].strip()
                    self.port = int(self.base.rsplit(":", 1)[1])
                    break
        except asyncio.TimeoutError:
            return proc, "not ready within 120 s"
        asyncio.get_running_loop().create_task(self._drain_stdout(proc))
        self.restarts.append({"gen": self.gen, "ready_s": round(time.monotonic() - t, 3),
                              "port": self.port})
        return proc, None

    async def _drain_stdout(self, proc):
        while True:
            line = await proc.stdout.readline()
            if not line:
                return

    async def ensure_started(self, tag=""):
        """Start on the same port (falls back to a new one), with a few tries."""
        for attempt in range(6):
            port = self.port if attempt < 3 else 0
            proc, err = await self.start_server(port, tag=tag)
            if not err:
                return
            tail = self.log_tail(self.server_log_paths[-1])
            self.say(f"start failed ({err}) on port {port}: {tail[-600:]}")
            self.findings["start_failures"].append({"gen": self.gen, "err": err, "log_tail": tail[-2000:]})
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await asyncio.sleep(0.5)
        raise RuntimeError("server does not start any more; see findings")

    def log_tail(self, p, n=4000):
        try:
            with open(p, "rb") as f:
                f.seek(max(0, os.path.getsize(p) - n))
                return ANSI.sub("", f.read().decode(errors="replace"))
        except OSError:
            return ""

    async def sigkill(self, mode, detail=None):
        self.up.clear()
        pid = self.proc.pid
        wal_before = fsize(self.wal)
        shm = read_shm(self.shm)
        os.kill(pid, signal.SIGKILL)
        await self.proc.wait()
        k = {"n": len(self.kills) + 1, "gen": self.gen, "mode": mode, "t": round(time.time() - self.t0, 3),
             "wal_at_kill": wal_before, "shm_at_kill": shm, "detail": detail,
             "rc": self.proc.returncode}
        self.kills.append(k)
        self.ev("kill", mode=mode, pid=pid)
        self.note_wal("at kill", wal_before)
        self.say(f"KILL #{k['n']} ({mode}{', ' + detail if detail else ''}) pid {pid}; WAL {wal_before} B, "
                 f"shm {shm}")
        return k

    def note_wal(self, where, size):
        if size is not None:
            self.wal_samples.append((round(time.time() - self.t0, 2), where, size))
            if size > self.wal_max:
                self.wal_max = size
                self.wal_max_at = where

    async def wal_monitor(self):
        while True:
            s = fsize(self.wal)
            if s is not None and s > self.wal_max:
                self.wal_max = s
                self.wal_max_at = f"sampled at {time.time() - self.t0:.1f}s"
            await asyncio.sleep(0.05)

    async def watch_proc(self):
        """A server that exits on its own (not killed by us) is a finding."""
        while not self.final:
            await asyncio.sleep(0.2)
            p = self.proc
            if p is not None and p.returncode is not None and self.up.is_set():
                self.up.clear()
                tail = self.log_tail(self.server_log_paths[-1])
                self.say(f"SERVER EXITED ON ITS OWN: rc {p.returncode}; log tail: {tail[-800:]}")
                self.findings["server_exited"].append({"gen": self.gen, "rc": p.returncode, "log_tail": tail[-3000:]})
                await self.ensure_started(tag="-after-exit")
                await self.after_restart_checks(None)
                await self.new_session()
                self.up.set()

    # ---- HTTP ----------------------------------------------------------------------------
    async def new_session(self):
        if self.session is not None:
            self.old_sessions.append(self.session)
        conn = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=15))
        # close sessions of earlier generations a bit later
        while len(self.old_sessions) > 2:
            s = self.old_sessions.pop(0)
            await s.close()

    async def get_token(self):
        for _ in range(20):
            try:
                async with self.session.post(
                        f"{self.base}/{TENANT}/oauth2/v2.0/token",
                        data={"grant_type": "client_credentials", "client_id": APP,
                              "client_secret": SECRET, "scope": "https://graph.microsoft.com/.default"}) as r:
                    if r.status == 200:
                        self.token = (await r.json())["access_token"]
                        return
                    self.note_status("token", r.status, await r.text(), None)
            except Exception as e:  # noqa: BLE001
                self.say(f"token: {e!r}")
            await asyncio.sleep(0.5)
        raise RuntimeError("no token")

    def auth(self):
        return {"Authorization": f"Bearer {self.token}"}

    def note_status(self, what, status, text, cid):
        if status >= 500:
            self.stats["http_5xx"] += 1
            self.status_5xx.append({"t": round(time.time() - self.t0, 3), "what": what, "status": status,
                                    "call": cid, "body": (text or "")[:400], "gen": self.gen})
            self.ev("5xx", what=what, status=status, c=cid, body=(text or "")[:400])
        else:
            self.stats[f"http_{what}_{status}"] += 1
            if len(self.unexpected) < 200:
                self.unexpected.append({"t": round(time.time() - self.t0, 3), "what": what, "status": status,
                                        "call": cid, "body": (text or "")[:300]})

    def body(self):
        return {
            "callbackUri": self.callback,
            "targets": [{"identity": {"user": {"id": PARTY}}}],
            "requestedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        }

    async def create(self):
        gen = self.gen
        s = self.session
        t = time.time()
        self.stats["create_sent"] += 1
        try:
            async with s.post(f"{self.base}/v1.0/communications/calls", json=self.body(),
                              headers=self.auth()) as r:
                status = r.status
                text = await r.text()
        except Exception as e:  # noqa: BLE001
            self.stats["create_no_answer"] += 1
            if self.up.is_set() and gen == self.gen:
                self.stats["create_error_while_up"] += 1
                self.ev("create_err_up", err=repr(e)[:200])
                await asyncio.sleep(0.05)
            return None
        if status == 201:
            cid = json.loads(text)["id"].lower()
            self.calls[cid] = {"created": t, "acked": time.time(), "gen": gen}
            self.stats["create_201"] += 1
            self.ev("c201", c=cid)
            return cid
        self.note_status("create", status, text, None)
        if status == 401:
            await self.get_token()
        elif status >= 500 or status == 429:
            await asyncio.sleep(0.2)
        return None

    async def delete(self, cid):
        rec = self.calls[cid]
        for attempt in range(1, 200):
            await self.up.wait()
            gen = self.gen
            s = self.session
            rec.setdefault("del_sent", time.time())
            rec["del_tries"] = attempt
            self.stats["delete_sent"] += 1
            try:
                async with s.delete(f"{self.base}/v1.0/communications/calls/{cid}", headers=self.auth()) as r:
                    status = r.status
                    text = await r.text()
            except Exception as e:  # noqa: BLE001
                self.stats["delete_no_answer"] += 1
                rec["del_unanswered"] = rec.get("del_unanswered", 0) + 1
                self.ev("d_err", c=cid, err=repr(e)[:120])
                if self.up.is_set() and gen == self.gen:
                    self.stats["delete_error_while_up"] += 1
                    await asyncio.sleep(0.2)
                continue
            if status in (200, 202, 204):
                rec["del_ack"] = time.time()
                rec["del_ack_gen"] = gen
                self.stats[f"delete_{status}"] += 1
                if attempt > 1:
                    self.stats["delete_acked_on_retry"] += 1
                self.ev("d2xx", c=cid, s=status, a=attempt)
                return
            if status == 404:
                rec["del_404"] = time.time()
                rec["del_404_attempt"] = attempt
                self.stats["delete_404"] += 1
                self.ev("d404", c=cid, a=attempt)
                return
            self.note_status("delete", status, text, cid)
            if status == 401:
                await self.get_token()
                continue
            if status >= 500 or status == 429:
                await asyncio.sleep(0.3)
                continue
            rec["del_other"] = status
            return
        rec["del_gave_up"] = True

    async def worker(self, wid):
        rng = random.Random(self.a.seed * 1000 + wid)
        while not self.stop_load:
            await self.up.wait()
            await self.limiter.acquire()
            if self.stop_load:
                break
            if not self.up.is_set():
                continue
            r = rng.random()
            kind = "keep" if r < self.a.keep_share else ("fast" if r < self.a.keep_share + self.a.fast_share else "normal")
            cid = await self.create()
            if cid is None:
                continue
            self.calls[cid]["kind"] = kind
            if kind == "keep":
                continue
            if kind == "normal" and cid not in self.established:
                ev = asyncio.Event()
                self.waiters[cid] = ev
                try:
                    await asyncio.wait_for(ev.wait(), timeout=self.a.hold)
                except asyncio.TimeoutError:
                    self.stats["establish_wait_timeout"] += 1
                finally:
                    self.waiters.pop(cid, None)
            if cid in self.established:
                self.calls[cid]["saw_established"] = True
            await self.delete(cid)

    # ---- checks right after a restart ------------------------------------------------------
    async def party_live_calls(self):
        for _ in range(10):
            try:
                async with self.session.get(f"{self.base}/_switchboard/v1/parties/{PARTY}",
                                            headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                    if r.status == 200:
                        j = await r.json()
                        return {c["callId"].lower(): c["state"] for c in j.get("calls", [])}
                    self.note_status("party", r.status, await r.text(), None)
            except Exception as e:  # noqa: BLE001
                self.say(f"party list: {e!r}")
            await asyncio.sleep(0.3)
        return None

    async def get_call(self, s, cid):
        err = None
        for _ in range(5):
            try:
                async with s.get(f"{self.base}/v1.0/communications/calls/{cid}", headers=self.auth()) as r:
                    text = await r.text()
                    if r.status >= 500:
                        self.note_status("get", r.status, text, cid)
                        await asyncio.sleep(0.3)
                        continue
                    st = None
                    if r.status == 200:
                        st = json.loads(text).get("state")
                    return r.status, st
            except Exception as e:  # noqa: BLE001
                err = repr(e)
                await asyncio.sleep(0.3)
        return None, err

    async def get_many(self, cids, conc=24):
        out = {}
        q = list(cids)
        s = self.session

        async def w():
            while q:
                cid = q.pop()
                out[cid] = await self.get_call(s, cid)

        await asyncio.gather(*[w() for _ in range(conc)])
        return out

    async def after_restart_checks(self, kill):
        """Before load resumes: (1) no call whose DELETE was acknowledged is live (resurrection),
        (2) every call whose create was acknowledged and that was never sent a DELETE is live
        (lost create), (3) GET of calls deleted (acked) in the last seconds before the kill is 404."""
        await self.new_session()
        if self.token is None:
            await self.get_token()
        live = await self.party_live_calls()
        wal = fsize(self.wal)
        self.note_wal(f"after restart gen {self.gen}", wal)
        if live is None:
            self.findings["checks_failed"].append({"gen": self.gen, "what": "party list unavailable"})
            return
        live_states = {c: s for c, s in live.items() if s != "terminated"}
        res = []
        lost_creates = []
        for cid, rec in self.calls.items():
            if cid in live_states and ("del_ack" in rec or "del_404" in rec):
                res.append({"call": cid, "state": live_states[cid], "del_ack": rec.get("del_ack"),
                            "gen_at_restart": self.gen})
            if "del_sent" not in rec and cid not in live_states:
                lost_creates.append({"call": cid, "created": rec["created"], "gen": rec["gen"],
                                     "gen_at_restart": self.gen, "listed_as": live.get(cid)})
        recent = []
        if kill is not None:
            horizon = time.time() - 5
            recent = [c for c, r in self.calls.items() if r.get("del_ack", 0) > horizon][-2000:]
        got = await self.get_many(recent, conc=16) if recent else {}
        bad_get = [{"call": c, "get": v, "gen_at_restart": self.gen} for c, v in got.items() if v[0] != 404]
        for c, v in got.items():
            if v[0] == 404:
                self.stats["restart_get_404_ok"] += 1
        if res:
            self.findings["resurrected_after_restart"].extend(res)
        if lost_creates:
            self.findings["lost_creates_after_restart"].extend(lost_creates)
        if bad_get:
            self.findings["deleted_call_get_not_404_after_restart"].extend(bad_get)
        self.stats["restart_checks"] += 1
        self.say(f"  restart gen {self.gen} on port {self.port}: ready in {self.restarts[-1]['ready_s']}s, "
                 f"WAL {wal} B, live calls {len(live_states)}, resurrected {len(res)}, "
                 f"lost creates {len(lost_creates)}, recent deleted GETs {len(got)} (not 404: {len(bad_get)})")

    # ---- kill timing ---------------------------------------------------------------------
    async def load_for(self, secs):
        await asyncio.sleep(secs)

    async def wait_shm(self, pred, timeout, poll=0.001):
        end = time.monotonic() + timeout
        prev = read_shm(self.shm)
        while time.monotonic() < end:
            cur = read_shm(self.shm)
            if cur and prev and pred(prev, cur):
                return prev, cur
            prev = cur or prev
            await asyncio.sleep(poll)
        return None

    async def one_kill(self, mode):
        rng = self.rng
        detail = None
        if mode == "restart":
            # killed again soon after it came back (redeliveries of pending notifications,
            # recovery of the WAL, first commits)
            await asyncio.sleep(rng.uniform(0.05, 1.5))
        elif mode == "random":
            await self.load_for(rng.uniform(2, 16))
        elif mode == "burst":
            await self.load_for(rng.uniform(2, 8))
            dur = rng.uniform(0.5, 2.5)
            n0 = self.stats["create_201"]
            self.limiter.rate = self.a.burst_rate
            await asyncio.sleep(dur)
            got = (self.stats["create_201"] - n0) / dur
            during = rng.random() < 0.4
            lag = 0.0 if during else rng.uniform(0, 0.3)
            if not during:
                self.limiter.rate = self.a.rate
                await asyncio.sleep(lag)
            detail = (f"burst {dur:.2f}s (target {self.a.burst_rate:.0f}/s, got {got:.0f} creates/s), "
                      + ("killed at its end, still bursting" if during else f"killed {lag * 1000:.0f} ms after it"))
        elif mode == "outage":
            # the receiver refuses (503) for a while, so notifications pile up pending in the
            # outbox; the server is killed in the middle of that
            await self.load_for(rng.uniform(2, 6))
            secs = rng.uniform(2, 6)
            async with self.session.post(self.callback.rsplit("/api/", 1)[0] + "/_ctl/outage",
                                         json={"secs": secs}) as r:
                assert r.status == 200
            lag = rng.uniform(0.5, secs)
            await asyncio.sleep(lag)
            detail = f"receiver refusing (503) for {secs:.1f}s, killed {lag:.1f}s into it"
        elif mode in ("walfull", "walreset", "backfill"):
            await self.load_for(rng.uniform(1, 5))
            if mode == "walfull":
                frac = rng.uniform(0.95, 1.02)
                hit = await self.wait_shm(lambda p, c: c[1] * (c[0] + 24) >= frac * WAL_LIMIT, 25)
                lag = rng.uniform(0, 0.03)
                await asyncio.sleep(lag)
                detail = (f"WAL frames reached {frac:.2f} of the limit, +{lag * 1000:.0f} ms" if hit
                          else "WAL limit not reached within 25 s")
            elif mode == "walreset":
                hit = await self.wait_shm(
                    lambda p, c: p[1] * (p[0] + 24) >= 0.5 * WAL_LIMIT and c[1] < p[1] // 4, 25)
                detail = (f"WAL restart observed (mxFrame {hit[0][1]} -> {hit[1][1]})" if hit
                          else "WAL restart not observed within 25 s")
            else:
                hit = await self.wait_shm(lambda p, c: c[2] != p[2] and 0 < c[2] < c[1] - 64, 10)
                detail = (f"backfill in progress (nBackfill {hit[1][2]} of mxFrame {hit[1][1]})" if hit
                          else "no backfill progress seen within 10 s")
        await self.sigkill(mode, detail)

    async def startup_kill(self):
        """Kill the server while it starts (recovering the WAL, loading the store)."""
        self.up.clear()
        proc, _ = await self.start_server(self.port, wait_ready=False, tag="-startup-kill")
        lag = self.rng.uniform(0.005, 0.25)
        await asyncio.sleep(lag)
        printed = False
        try:
            line = await asyncio.wait_for(proc.stdout.read(4096), timeout=0.001)
            printed = b"listening" in line
        except asyncio.TimeoutError:
            pass
        wal = fsize(self.wal)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        k = {"n": len(self.kills) + 1, "gen": self.gen, "mode": "startup", "t": round(time.time() - self.t0, 3),
             "wal_at_kill": wal, "detail": f"{lag * 1000:.0f} ms after exec, ready line seen: {printed}",
             "rc": proc.returncode}
        self.kills.append(k)
        self.ev("kill", mode="startup", pid=proc.pid)
        self.say(f"KILL #{k['n']} (startup, {k['detail']}) WAL {wal}")

    # ---- the run -------------------------------------------------------------------------
    async def run(self):
        # receiver
        self.hints = UdpHints(self)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self.hints, local_addr=("127.0.0.1", 0))
        try:
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        except OSError:
            pass
        udp_port = transport.get_extra_info("sockname")[1]
        self.rx_path = os.path.join(self.dir, "received.jsonl")
        port_q = multiprocessing.Queue()
        self.rx_proc = multiprocessing.Process(target=receiver_main,
                                               args=(self.rx_path, udp_port, port_q, 0), daemon=True)
        self.rx_proc.start()
        rx_port = port_q.get(timeout=20)
        self.callback = f"http://127.0.0.1:{rx_port}/api/calls"
        self.say(f"run dir {self.dir}; receiver {self.callback} (pid {self.rx_proc.pid})")

        await self.ensure_started()
        await self.new_session()
        await self.get_token()
        self.say(f"server gen 1 at {self.base}")
        loop.create_task(self.wal_monitor())
        loop.create_task(self.watch_proc())
        self.up.set()
        workers = [loop.create_task(self.worker(i)) for i in range(self.a.workers)]

        # (a "startup" entry is two kills: one under load, then one of the next start while it
        # starts; a "restart" entry kills soon after the previous restart)
        plan = {"random": 5, "outage": 3, "burst": 6, "walfull": 4, "walreset": 3, "backfill": 3, "restart": 2, "startup": 2}
        modes = [m for m, n in plan.items() for _ in range(n)]
        self.rng.shuffle(modes)
        weight = lambda ms: sum(2 if m == "startup" else 1 for m in ms)  # noqa: E731
        while weight(modes) > self.a.kills:
            modes.pop()
        while weight(modes) < self.a.kills:
            modes.append(self.rng.choice(["random", "outage", "burst", "walfull", "walreset", "backfill"]))
        if modes and modes[0] == "restart":
            modes.append(modes.pop(0))
        self.say(f"kill plan: {modes}")

        rate_log = loop.create_task(self.rate_logger())
        for i, mode in enumerate(modes):
            if mode == "startup":
                await self.load_for(self.rng.uniform(2, 8))
                await self.sigkill("random-before-startup-kill")
                # that one counts as a kill too; then kill the next start while it starts
                await self.startup_kill()
            else:
                await self.one_kill(mode)
            self.limiter.rate = self.a.rate
            self.note_wal(f"after kill #{len(self.kills)}", fsize(self.wal))
            await self.ensure_started()
            await self.after_restart_checks(self.kills[-1])
            self.up.set()

        self.say(f"{len(self.kills)} kills done; final {self.a.tail_secs}s of load")
        await asyncio.sleep(self.a.tail_secs)
        self.stop_load = True
        self.say("load stopped; waiting for workers to finish their lifecycles")
        done, pending = await asyncio.wait(workers, timeout=60)
        for w in pending:
            w.cancel()
        rate_log.cancel()
        self.note_wal("end of load", fsize(self.wal))
        await self.drain_and_check()

    async def rate_logger(self):
        last = 0
        while True:
            await asyncio.sleep(10)
            n = self.stats["create_201"]
            self.say(f"  load: {(n - last) / 10:.0f} creates/s acked, totals create 201 {n}, "
                     f"delete 2xx {self.stats['delete_204'] + self.stats['delete_200']}, 5xx {self.stats['http_5xx']}, "
                     f"WAL {fsize(self.wal)}")
            last = n

    # ---- receiver data -------------------------------------------------------------------
    def load_received(self):
        if not hasattr(self, "_rx_off"):
            self._rx_off = 0
            self.rx = collections.defaultdict(list)  # cid -> [(t, seq, state, ct, etag, rc, rs)]
            self.rx_other = []
            self.rx_refused = 0
        with open(self.rx_path, "rb") as f:
            f.seek(self._rx_off)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._rx_off += end + 1
        for line in data[: end + 1].splitlines():
            if not line:
                continue
            d = json.loads(line)
            if "refused" in d:
                self.rx_refused += 1
                continue
            if d.get("c") is None or d.get("u"):
                self.rx_other.append(d)
                if d.get("c") is None:
                    continue
            self.rx[d["c"]].append((d["t"], d.get("q"), d.get("s"), d.get("ct"), d.get("e"), d.get("rc"), d.get("rs")))

    def expected(self, cid, rec):
        exp = ["establishing"]
        if rec.get("kind") == "keep" or rec.get("saw_established"):
            exp.append("established")
        if "del_ack" in rec or "del_404" in rec:
            exp.append("terminated")
        return exp

    def missing(self):
        out = {}
        for cid, rec in self.calls.items():
            got = {x[2] for x in self.rx.get(cid, ())}
            miss = [s for s in self.expected(cid, rec) if s not in got]
            if miss:
                out[cid] = miss
        return out

    async def deliveries(self, cid):
        try:
            async with self.session.get(f"{self.base}/_switchboard/v1/calls/{cid}/deliveries",
                                        headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                text = await r.text()
                if r.status != 200:
                    return {"status": r.status, "body": text[:300]}
                return json.loads(text)
        except Exception as e:  # noqa: BLE001
            return {"error": repr(e)}

    async def pending_in(self, cids):
        pend = {}
        sem = asyncio.Semaphore(8)

        async def one(c):
            async with sem:
                d = await self.deliveries(c)
            ns = d.get("notifications")
            if ns is None:
                pend[c] = {"unreadable": d}
                return
            p = [(n["sequence"], n["status"], n["attemptCount"]) for n in ns if n["status"] != "delivered"]
            if p:
                pend[c] = p

        await asyncio.gather(*[one(c) for c in cids])
        return pend

    async def drain_and_check(self):
        self.say("draining: waiting for every expected notification, or pending deliveries to clear")
        t_end = time.monotonic() + self.a.drain_timeout
        recent_sample = [c for c, r in list(self.calls.items())[-3000:]]
        while True:
            await asyncio.sleep(2)
            self.load_received()
            miss = self.missing()
            sample = self.rng.sample(recent_sample, min(200, len(recent_sample)))
            probe = list(miss)[:300] + sample
            pend = await self.pending_in(probe)
            self.say(f"  drain: calls missing an expected notification {len(miss)}, "
                     f"calls with a non-delivered notification (of {len(probe)} probed) {len(pend)}")
            if not miss and not pend:
                break
            if time.monotonic() > t_end:
                self.say("  drain timeout")
                break
        self.drain_pending = pend
        await asyncio.sleep(1.0)  # let the receiver flush
        self.load_received()
        await self.final_checks()

    async def final_checks(self):
        a = self.a
        calls = self.calls
        acked_creates = len(calls)
        del_acked = [c for c, r in calls.items() if "del_ack" in r]
        del_404 = [c for c, r in calls.items() if "del_404" in r]
        kept = [c for c, r in calls.items() if r.get("kind") == "keep"]
        never_deleted_other = [c for c, r in calls.items() if r.get("kind") != "keep"
                               and "del_ack" not in r and "del_404" not in r]

        # GETs: every acknowledged-deleted call must be 404; every kept call 200 established.
        self.say(f"final GETs: {len(del_acked)} acked-deleted, {len(del_404)} deleted-on-retry(404), {len(kept)} kept")
        targets = del_acked + del_404
        if a.final_get_sample and len(targets) > a.final_get_sample:
            targets = self.rng.sample(targets, a.final_get_sample)
        t = time.monotonic()
        got = await self.get_many(targets + kept + never_deleted_other, conc=24)
        self.say(f"  GETs done in {time.monotonic() - t:.1f}s")
        deleted_not_404 = [{"call": c, "get": got[c]} for c in targets if got[c][0] != 404]
        kept_bad = [{"call": c, "get": got[c]} for c in kept if got[c] != (200, "established")]
        live = await self.party_live_calls() or {}
        live_states = {c: s for c, s in live.items() if s != "terminated"}
        resurrected_live = [c for c in live_states if c in calls and ("del_ack" in calls[c] or "del_404" in calls[c])]
        orphans = [c for c in live_states if c not in calls]

        # notifications
        self.load_received()
        miss = self.missing()
        lost = {"establishing": [], "established": [], "terminated": []}
        for c, m in miss.items():
            for s in m:
                lost[s].append(c)
        # create acked but neither live nor terminated = the call vanished
        vanished = [c for c in calls if c not in live_states and
                    "terminated" not in {x[2] for x in self.rx.get(c, ())}]

        dup_pairs = dup_extra = pairs = 0
        seq_dup = seq_pairs = 0
        sem_dups = []
        seq_reuse = []
        after_terminated = []
        all_seqs = set()
        gaps = []
        distinct_by_state = collections.Counter()
        out_of_order = 0
        state_counts = collections.Counter()
        for c, lst in self.rx.items():
            per_state = collections.Counter(x[2] for x in lst)
            for s, n in per_state.items():
                state_counts[s] += n
                pairs += 1
                if n > 1:
                    dup_pairs += 1
                    dup_extra += n - 1
            by_seq = {}
            max_seen = 0
            for x in lst:
                q = x[1]
                if q is None:
                    continue
                key = (x[2], x[3], x[4])
                if q in by_seq:
                    seq_dup += 1
                    if by_seq[q] != key:
                        seq_reuse.append({"call": c, "seq": q, "first": by_seq[q], "then": key})
                else:
                    by_seq[q] = key
                    if q < max_seen:
                        out_of_order += 1
                    max_seen = max(max_seen, q)
            seq_pairs += len(by_seq)
            # the same state under different sequence numbers: emitted twice
            st_seqs = collections.defaultdict(set)
            for q, k in by_seq.items():
                st_seqs[k[0]].add(q)
            for s, qs in st_seqs.items():
                if len(qs) > 1 and s in ("establishing", "established", "terminating", "terminated"):
                    sem_dups.append({"call": c, "state": s, "seqs": sorted(qs)})
            term = [q for q, k in by_seq.items() if k[0] == "terminated"]
            if term:
                tq = min(term)
                later = [(q, k[0]) for q, k in by_seq.items() if q > tq]
                if later:
                    after_terminated.append({"call": c, "terminated_seq": tq, "later": later})
            all_seqs.update(by_seq)
            # Each call numbers its own notifications 1, 2, 3, ...; every one the server made
            # for a call went to this receiver, so a number never received is worth a look.
            if by_seq:
                gaps.extend({"call": c, "seq": q} for q in range(1, max(by_seq) + 1) if q not in by_seq)
            for s, n in collections.Counter(k[0] for k in by_seq.values()).items():
                distinct_by_state[s] += n

        end_reasons = collections.Counter()
        for c, lst in self.rx.items():
            for x in lst:
                if x[2] == "terminated":
                    end_reasons[(x[5], x[6])] += 1
                    break

        # evidence for anything lost: its deliveries log and the acks trail
        evidence = {}
        for c in list(miss)[:20] + [r["call"] for r in self.findings.get("lost_creates_after_restart", [])[:10]] \
                + [x["call"] for x in deleted_not_404[:10]] + resurrected_live[:10] + vanished[:10]:
            d = summarize_deliveries(await self.deliveries(c))
            evidence[c] = {"record": calls.get(c), "received": self.rx.get(c, []), "deliveries": d}

        wal_end = fsize(self.wal)
        self.note_wal("end", wal_end)

        # clean stop, then one more start to read the store back
        self.say("SIGTERM stop, then one more start to read the store back")
        self.final = True
        self.up.clear()
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 60)
        except asyncio.TimeoutError:
            self.findings["sigterm_timeout"].append({"gen": self.gen})
            self.proc.kill()
            await self.proc.wait()
        sigterm_rc = self.proc.returncode
        wal_after_stop = fsize(self.wal)
        self.up.clear()
        await self.ensure_started(tag="-final-readback")
        await self.new_session()
        live2 = await self.party_live_calls() or {}
        live2 = {c: s for c, s in live2.items() if s != "terminated"}
        readback_resurrected = [c for c in live2 if c in calls and ("del_ack" in calls[c] or "del_404" in calls[c])]
        readback_kept_missing = [c for c in kept if c not in live2]
        self.proc.send_signal(signal.SIGTERM)
        await self.proc.wait()
        final_rc = self.proc.returncode

        self.rx_proc.terminate()
        self.rx_proc.join(10)
        for sess in self.old_sessions + [self.session]:
            await sess.close()
        self.acks.flush()

        logs = self.scan_logs()

        rep = {
            "run_dir": self.dir,
            "duration_s": round(time.time() - self.t0, 1),
            "settings": vars(a),
            "kills": len(self.kills),
            "kill_modes": collections.Counter(k["mode"] for k in self.kills),
            "server_starts": self.gen,
            "restart_ready_s_max": max((r["ready_s"] for r in self.restarts), default=None),
            "acknowledged_creates_201": acked_creates,
            "create_requests_sent": self.stats["create_sent"],
            "create_requests_without_answer": self.stats["create_no_answer"],
            "acknowledged_deletes_2xx": len(del_acked),
            "acknowledged_deletes_on_retry": self.stats["delete_acked_on_retry"],
            "deletes_404_on_retry_after_unanswered": len(del_404),
            "delete_requests_without_answer": self.stats["delete_no_answer"],
            "kept_live_calls": len(kept),
            "created_but_never_deleted_other": len(never_deleted_other),
            "errors_while_server_up": {"create": self.stats["create_error_while_up"],
                                       "delete": self.stats["delete_error_while_up"]},
            "lost_notifications": {k: len(v) for k, v in lost.items()},
            "lost_total": sum(len(v) for v in lost.values()),
            "lost_call_ids": {k: v[:50] for k, v in lost.items()},
            "vanished_calls_not_live_no_terminated": len(vanished),
            "vanished_call_ids": vanished[:50],
            "lost_creates_after_restart": len(self.findings.get("lost_creates_after_restart", [])),
            "resurrected_after_restart": len(self.findings.get("resurrected_after_restart", [])),
            "resurrected_at_end_live": len(resurrected_live),
            "resurrected_after_final_readback": len(readback_resurrected),
            "deleted_calls_get_checked": len(targets),
            "deleted_calls_get_not_404": len(deleted_not_404),
            "deleted_calls_get_not_404_after_restarts": len(self.findings.get("deleted_call_get_not_404_after_restart", [])),
            "restart_recent_deleted_get_404_ok": self.stats["restart_get_404_ok"],
            "kept_calls_not_established_at_end": len(kept_bad),
            "kept_calls_missing_after_final_readback": len(readback_kept_missing),
            "orphan_live_calls_unacked_creates": len(orphans),
            "notifications_received": sum(len(v) for v in self.rx.values()),
            "receiver_refused_posts_503": self.rx_refused,
            "notifications_by_state": dict(state_counts),
            "duplicates_call_state_pairs": dup_pairs,
            "call_state_pairs": pairs,
            "duplicate_rate_pairs": round(dup_pairs / pairs, 6) if pairs else None,
            "duplicate_extra_receipts": dup_extra,
            "duplicate_same_sequence_redeliveries": seq_dup,
            "distinct_sequences": seq_pairs,
            "same_state_under_two_sequences": len(sem_dups),
            "same_state_under_two_sequences_examples": sem_dups[:20],
            "sequence_reused_for_different_content": len(seq_reuse),
            "sequence_reuse_examples": seq_reuse[:20],
            "events_after_terminated": len(after_terminated),
            "events_after_terminated_examples": after_terminated[:20],
            "max_sequence_received": max(all_seqs) if all_seqs else None,
            "sequence_numbers_never_received": len(gaps),
            "sequence_numbers_never_received_examples": gaps[:50],
            "distinct_notifications_by_state": dict(distinct_by_state),
            "first_arrivals_out_of_sequence_order": out_of_order,
            "end_reasons": {f"{k[0]}/{k[1]}": v for k, v in end_reasons.items()},
            "http_5xx": self.stats["http_5xx"],
            "http_5xx_examples": self.status_5xx[:30],
            "other_unexpected_statuses": self.unexpected[:30],
            "wal_max_bytes": self.wal_max,
            "wal_max_where": self.wal_max_at,
            "wal_at_end_bytes": wal_end,
            "wal_after_sigterm_bytes": wal_after_stop,
            "wal_after_restart_samples": [s for s in self.wal_samples if s[1].startswith("after restart")],
            "sigterm_exit_code": sigterm_rc,
            "final_readback_exit_code": final_rc,
            "drain_nondelivered_in_probe": len(self.drain_pending),
            "drain_nondelivered_examples": dict(list(self.drain_pending.items())[:10]),
            "findings": {k: v[:30] for k, v in self.findings.items()},
            "evidence": evidence,
            "kills_detail": self.kills,
            "restarts": self.restarts,
            "server_logs": logs,
            "stats": dict(self.stats),
        }
        with open(os.path.join(self.dir, "report.json"), "w") as f:
            json.dump(rep, f, indent=1, default=str)
        self.print_report(rep)
        self.report = rep

    def scan_logs(self):
        pats = {"panic": re.compile(r"panic", re.I), "corrupt": re.compile(r"corrupt", re.I),
                "malformed": re.compile(r"malformed", re.I), "ERROR": re.compile(r"\bERROR\b"),
                "WARN": re.compile(r"\bWARN\b")}
        out = {"files": [], "counts": collections.Counter(), "examples": collections.defaultdict(list),
               "distinct_warn_error_messages": collections.Counter()}
        for p in self.server_log_paths:
            out["files"].append(p)
            try:
                text = ANSI.sub("", open(p, encoding="utf-8", errors="replace").read())
            except OSError:
                continue
            for line in text.splitlines():
                for name, rx in pats.items():
                    if rx.search(line):
                        out["counts"][name] += 1
                        if len(out["examples"][name]) < 8:
                            out["examples"][name].append(f"{os.path.basename(p)}: {line[:400]}")
                if re.search(r"\b(WARN|ERROR)\b", line):
                    msg = re.sub(r"^\S+\s+(WARN|ERROR)\s+", r"\1 ", line)
                    msg = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", msg)
                    msg = re.sub(r"\d+(\.\d+)?", "N", msg)
                    out["distinct_warn_error_messages"][msg[:200]] += 1
        out["counts"] = dict(out["counts"])
        out["examples"] = dict(out["examples"])
        out["distinct_warn_error_messages"] = dict(out["distinct_warn_error_messages"].most_common(30))
        return out

    def print_report(self, r):
        P = lambda *x: self.say(" ".join(str(y) for y in x))  # noqa: E731
        P("=" * 78)
        P("REPORT", r["run_dir"], f"({r['duration_s']} s)")
        P("kills:", r["kills"], dict(r["kill_modes"]), "| server starts:", r["server_starts"],
          "| slowest restart to ready:", r["restart_ready_s_max"], "s")
        P("acknowledged creates (201):", r["acknowledged_creates_201"], "of", r["create_requests_sent"],
          "sent;", r["create_requests_without_answer"], "without answer (killed in flight)")
        P("acknowledged deletes (2xx):", r["acknowledged_deletes_2xx"], f"({r['acknowledged_deletes_on_retry']} on a retry);",
          "404 on retry after an unanswered DELETE:", r["deletes_404_on_retry_after_unanswered"],
          "| kept live:", r["kept_live_calls"], "| other never deleted:", r["created_but_never_deleted_other"])
        P("LOST notifications:", r["lost_total"], r["lost_notifications"])
        P("vanished (acked create, not live, no terminated):", r["vanished_calls_not_live_no_terminated"])
        P("lost creates seen after restarts:", r["lost_creates_after_restart"])
        P("RESURRECTED: after restarts", r["resurrected_after_restart"], "| live at end", r["resurrected_at_end_live"],
          "| after final read-back", r["resurrected_after_final_readback"],
          "| deleted calls GET not 404:", r["deleted_calls_get_not_404"], "of", r["deleted_calls_get_checked"],
          "(+", r["deleted_calls_get_not_404_after_restarts"], "in post-restart spot checks of",
          r["restart_recent_deleted_get_404_ok"] + r["deleted_calls_get_not_404_after_restarts"], ")")
        P("kept calls not established at end:", r["kept_calls_not_established_at_end"],
          "| kept calls missing after read-back:", r["kept_calls_missing_after_final_readback"],
          "| orphan live calls (create unanswered but committed):", r["orphan_live_calls_unacked_creates"])
        P("notifications received:", r["notifications_received"], "(receiver refused", r["receiver_refused_posts_503"], "POSTs with 503 during outages)", r["notifications_by_state"],
          "distinct:", r["distinct_notifications_by_state"])
        P("duplicates: (call,state) pairs received >1:", r["duplicates_call_state_pairs"], "of", r["call_state_pairs"],
          f"= {r['duplicate_rate_pairs']};", "extra receipts:", r["duplicate_extra_receipts"],
          "| same-sequence redeliveries:", r["duplicate_same_sequence_redeliveries"], "of",
          r["distinct_sequences"], "sequences")
        P("same state under two sequence numbers:", r["same_state_under_two_sequences"],
          "| sequence reused for other content:", r["sequence_reused_for_different_content"],
          "| events after terminated:", r["events_after_terminated"],
          "| sequence numbers never received:", r["sequence_numbers_never_received"], "of", r["max_sequence_received"],
          "| first arrivals out of order:", r["first_arrivals_out_of_sequence_order"])
        P("end reasons:", r["end_reasons"])
        P("5xx answers:", r["http_5xx"], "| errors while server up:", r["errors_while_server_up"])
        P("WAL: max", r["wal_max_bytes"], "B", f"({r['wal_max_where']}),", "at end", r["wal_at_end_bytes"],
          "| after SIGTERM", r["wal_after_sigterm_bytes"], "| exit codes SIGTERM", r["sigterm_exit_code"],
          r["final_readback_exit_code"])
        P("server logs:", r["server_logs"]["counts"])
        for k, v in r["server_logs"]["distinct_warn_error_messages"].items():
            P(f"   {v:6d} x {k}")
        P("drain: non-delivered notifications in final probe:", r["drain_nondelivered_in_probe"])
        if r["findings"]:
            P("FINDINGS:", json.dumps(r["findings"], default=str)[:3000])
        P("=" * 78)


def summarize_deliveries(d):
    if "notifications" not in d:
        return d
    out = []
    for n in d["notifications"]:
        state = None
        try:
            rd = n["body"]["value"][0]["resourceData"]
            state = rd.get("state") if isinstance(rd, dict) else None
        except (KeyError, IndexError, TypeError):
            pass
        e = {k: n.get(k) for k in ("sequence", "changeType", "status", "attemptCount", "createdAt",
                                   "nextAttemptAt", "attempts")}
        e["state"] = state
        out.append(e)
    return {"notifications": out, "pruned": d.get("pruned")}


def write_bench_config(bench_bin, path):
    """The server configuration the bench uses (apps, secrets and party the campaign expects)."""
    out = subprocess.run([bench_bin, "print-config"], check=True, stdout=subprocess.PIPE).stdout
    with open(path, "wb") as f:
        f.write(out)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", "--binary", dest="binary", metavar="PATH",
                    default=os.path.join(REPO, "target", "release", "switchboard"),
                    help="switchboard binary (default: target/release/switchboard)")
    ap.add_argument("--bench-bin", default=os.path.join(REPO, "target", "release", "bench"),
                    help="bench binary whose `print-config` gives the server config "
                         "(default: target/release/bench)")
    ap.add_argument("--config", default=None,
                    help="server config (default: `bench print-config`, written to the run dir)")
    ap.add_argument("--run-dir", default=None, help="default: a fresh temporary directory")
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--rate", type=float, default=300, help="lifecycle starts per second (steady)")
    ap.add_argument("--burst-rate", type=float, default=1500, help="lifecycle starts per second in bursts")
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--hold", type=float, default=1.0, help="max wait for `established` before DELETE")
    ap.add_argument("--keep-share", type=float, default=0.02, help="share of calls never hung up")
    ap.add_argument("--fast-share", type=float, default=0.10, help="share hung up right after the 201")
    ap.add_argument("--tail-secs", type=float, default=10)
    ap.add_argument("--drain-timeout", type=float, default=150)
    ap.add_argument("--final-get-sample", type=int, default=0, help="0: GET every deleted call")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    a.run_dir = a.run_dir or tempfile.mkdtemp(prefix="switchboard-kill-campaign-")
    os.makedirs(a.run_dir, exist_ok=True)
    if a.config is None:
        a.config = write_bench_config(a.bench_bin, os.path.join(a.run_dir, "bench-config.toml"))
    camp = Campaign(a)
    camp.say(f"seed {a.seed}")
    asyncio.run(camp.run())
    r = camp.report
    bad = (r["lost_total"] or r["vanished_calls_not_live_no_terminated"] or r["lost_creates_after_restart"]
           or r["resurrected_after_restart"] or r["resurrected_at_end_live"] or r["resurrected_after_final_readback"]
           or r["deleted_calls_get_not_404"] or r["deleted_calls_get_not_404_after_restarts"] or r["http_5xx"]
           or r["kept_calls_not_established_at_end"] or r["kept_calls_missing_after_final_readback"]
           or r["sequence_reused_for_different_content"] or r["server_logs"]["counts"].get("panic")
           or r["server_logs"]["counts"].get("corrupt") or r["server_logs"]["counts"].get("malformed"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
