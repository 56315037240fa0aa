"""Benchmarks of a real API server on loopback: latency under load, and durability under kill -9.

    python -m trafficcore.api.bench load  --clients 20 --requests 2000 [--db STORE --dataset NAME]
    python -m trafficcore.api.bench crash [--db STORE --dataset NAME] [--kill-after 3] [--streams 2]

Both start `trafficcore serve` as a subprocess on a free loopback port with a fresh token, on a
*copy* of the store (or a freshly generated demo city when no --db is given), and print a table.

- **load**: one warm-up request (the model loads and the first forecast of every detector is
  computed; its time is printed as "cold"), then `--requests` GET /forecast calls for one site each
  (sites in turn), from `--clients` concurrent clients; p50/p95/max latency and requests/s.
- **crash**: `--streams` clients post batches of new readings (one interval of every detector per
  batch, timestamps after the newest stored) and record each batch the server acknowledged; after
  `--kill-after` seconds the server gets SIGKILL mid-stream. It is restarted on the same store, the
  acknowledged batches are resent (each must come back as a duplicate that writes nothing), and the
  store is read directly: every acknowledged reading must be stored exactly once with its value,
  and no (detector, ts) key may appear twice anywhere in the dataset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """`trafficcore serve` in a subprocess on 127.0.0.1 (context manager: started, then torn down)."""

    db: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    log: Path | None = None
    extra_env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        import httpx

        env = {**os.environ, "TRAFFICCORE_API_TOKENS": self.token, "HF_HUB_OFFLINE": "1", **self.extra_env}
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trafficcore.cli", "serve", "--db", str(self.db), "--port", str(self.port),
             "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} (log: {self.log})")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer /health within {timeout_s:.0f} s (log: {self.log})")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- stores
def prepare_store(db: Path | None, dataset: str, workdir: Path) -> tuple[Path, str]:
    """A store the benchmark may write to: a copy of `db`, or a fresh demo city (4 weeks)."""
    target = workdir / "bench.duckdb"
    if db is not None:
        shutil.copyfile(db, target)
        wal = Path(str(db) + ".wal")
        if wal.exists():
            shutil.copyfile(wal, Path(str(target) + ".wal"))
        return target, dataset
    from trafficcore.data import demo
    from trafficcore.data.store import Store

    Store(target).ingest(dataset, demo.generate(seed=0, weeks=4))
    return target, dataset


def _sites(db: Path, dataset: str) -> list[str]:
    from trafficcore.data.store import Store

    return [str(s) for s in Store(db).detectors(dataset)["site_id"].unique()]


# ---------------------------------------------------------------------------------------------- load
def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


async def _load(url: str, headers: dict, dataset: str, sites: list[str], clients: int, requests: int):
    """`clients` keep-alive connections, each sending its share of GET /forecast requests back to back.

    Why raw HTTP/1.1 over asyncio streams rather than httpx: on a 2-core machine a Python HTTP client
    costs several times the server's CPU per request, so the measurement would mostly time the client.
    """
    from urllib.parse import urlencode, urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port
    auth = headers["Authorization"]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(requests))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                q = urlencode({"dataset": dataset, "site": sites[i % len(sites)]})
                req = f"GET /forecast?{q} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n".encode()
                t0 = time.perf_counter()
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return np.array(latencies), errors, wall


def run_load(db: Path | None, dataset: str, clients: int, requests: int) -> dict:
    import httpx

    with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
        store, dataset = prepare_store(db, dataset, Path(tmp))
        sites = _sites(store, dataset)
        with ServerProcess(store, log=Path(tmp) / "server.log") as srv:
            t0 = time.perf_counter()
            r = httpx.get(srv.url + "/forecast", params={"dataset": dataset, "site": sites[0]}, headers=srv.headers,
                          timeout=300)
            cold = time.perf_counter() - t0
            r.raise_for_status()
            model = r.json()["model"]
            cpu0 = _cpu_s(srv.proc.pid)
            lat, errors, wall = asyncio.run(_load(srv.url, srv.headers, dataset, sites, clients, requests))
            server_cpu = _cpu_s(srv.proc.pid) - cpu0
            server_rss = _peak_rss_mb(srv.proc.pid)
    ms = lat * 1000
    return {
        "dataset": dataset, "model": model, "sites": len(sites), "clients": clients, "requests": len(lat),
        "errors": errors, "cold_ms": cold * 1000, "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max()), "req_per_s": len(lat) / wall,
        "server_cpu_ms_per_req": 1000 * server_cpu / max(1, len(lat)), "load_avg_1min": os.getloadavg()[0],
        "server_peak_rss_mb": server_rss,
    }


def _peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a running process (Linux /proc VmHWM; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---------------------------------------------------------------------------------------------- crash
def _batches(db: Path, dataset: str, n: int) -> list[list[dict]]:
    """`n` batches of new readings: batch k = every detector at the k-th interval after the newest stored."""
    from trafficcore.data.store import Store

    store = Store(db)
    dets = store.detectors(dataset)["detector_id"].astype(str).tolist()
    info = store.dataset_info(dataset)
    newest = pd.Timestamp(store.query("SELECT max(ts) AS t FROM observations WHERE dataset = ?", [dataset])["t"][0])
    step = pd.Timedelta(seconds=int(info["interval_s"]))
    rng = np.random.default_rng(0)
    out = []
    for k in range(1, n + 1):
        ts = (newest + k * step).isoformat()
        vals = rng.integers(0, 400, len(dets))
        out.append([{"detector_id": d, "ts": ts, "value": float(v)} for d, v in zip(dets, vals, strict=True)])
    return out


def run_crash(db: Path | None, dataset: str, kill_after: float, streams: int, max_batches: int,
              refresh: bool = True) -> dict:
    import httpx

    from trafficcore.data.store import Store

    with tempfile.TemporaryDirectory(prefix="tc-crash-") as tmp:
        store_path, dataset = prepare_store(db, dataset, Path(tmp))
        before = int(Store(store_path).query("SELECT count(*) AS n FROM observations WHERE dataset = ?",
                                             [dataset])["n"][0])
        batches = _batches(store_path, dataset, max_batches)
        acked: list[int] = []
        failed: list[int] = []
        lock = threading.Lock()
        next_batch = iter(range(len(batches)))
        srv = ServerProcess(store_path, log=Path(tmp) / "server.log").start()

        def stream() -> None:
            with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30.0) as client:
                for k in next_batch:
                    try:
                        r = client.post("/observations", json=batches[k],
                                        params={"dataset": dataset, "source": f"bench-{k}", "refresh": refresh})
                        ok = r.status_code == 200 and r.json()["received"] == len(batches[k])
                    except httpx.HTTPError:
                        ok = False
                    with lock:
                        (acked if ok else failed).append(k)
                    if not ok:
                        return

        threads = [threading.Thread(target=stream) for _ in range(streams)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(kill_after)
        srv.kill9()
        killed_at = time.perf_counter() - t0
        for t in threads:
            t.join()
        t1 = time.perf_counter()
        srv2 = ServerProcess(store_path, token=srv.token, port=free_port(), log=Path(tmp) / "server.log").start()
        restart_s = time.perf_counter() - t1
        resent_dup = 0
        with httpx.Client(base_url=srv2.url, headers=srv2.headers, timeout=60.0) as client:
            for k in acked:
                r = client.post("/observations", params={"dataset": dataset, "source": f"bench-{k}"}, json=batches[k])
                r.raise_for_status()
                resent_dup += bool(r.json()["duplicate_batch"]) and r.json()["written"] == 0
        srv2.stop()
        con = Store(store_path)
        keys = pd.DataFrame([o for k in acked for o in batches[k]])
        keys["ts"] = pd.to_datetime(keys["ts"])
        with con.connect() as c:
            c.register("_acked", keys)
            stored = c.execute(
                """SELECT count(*) AS n_keys, sum(CASE WHEN n = 1 THEN 1 ELSE 0 END) AS once,
                          sum(CASE WHEN n = 1 AND ok THEN 1 ELSE 0 END) AS once_same_value
                   FROM (SELECT a.detector_id, a.ts, count(o.value) AS n, bool_and(o.value = a.value) AS ok
                         FROM _acked a LEFT JOIN observations o
                              ON o.dataset = ? AND o.detector_id = a.detector_id AND o.ts = a.ts
                         GROUP BY a.detector_id, a.ts)""",
                [dataset],
            ).fetchone()
            dup_keys = c.execute(
                """SELECT count(*) FROM (SELECT detector_id, ts FROM observations WHERE dataset = ?
                   GROUP BY detector_id, ts HAVING count(*) > 1)""", [dataset]).fetchone()[0]
            after = c.execute("SELECT count(*) FROM observations WHERE dataset = ?", [dataset]).fetchone()[0]
    acked_readings = int(sum(len(batches[k]) for k in acked))
    return {
        "dataset": dataset, "streams": streams, "refresh_forecasts": refresh, "killed_after_s": round(killed_at, 2),
        "batches_acknowledged": len(acked), "batches_in_flight_at_kill": len(failed),
        "readings_acknowledged": acked_readings, "acknowledged_keys_checked": int(stored[0] or 0),
        "stored_exactly_once": int(stored[1] or 0), "stored_once_with_sent_value": int(stored[2] or 0),
        "duplicated_keys_in_dataset": int(dup_keys), "resent_batches_recognised": int(resent_dup),
        "observations_before": before, "observations_after": int(after), "restart_s": round(restart_s, 2),
        "ok": bool(stored[2] == acked_readings and dup_keys == 0 and resent_dup == len(acked)
                   and int(after) - before >= acked_readings),
    }


# ---------------------------------------------------------------------------------------------- CLI
def _table(result: dict) -> str:
    width = max(len(k) for k in result)
    return "\n".join(f"{k:<{width}}  {v:.1f}" if isinstance(v, float) else f"{k:<{width}}  {v}"
                     for k, v in result.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trafficcore.api.bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("load", "crash"):
        q = sub.add_parser(name)
        q.add_argument("--db", type=Path, default=None, help="store to copy (default: a fresh demo city)")
        q.add_argument("--dataset", default="demo")
        q.add_argument("--json", type=Path, default=None, help="also write the result here")
    sub.choices["load"].add_argument("--clients", type=int, default=20)
    sub.choices["load"].add_argument("--requests", type=int, default=1000)
    sub.choices["crash"].add_argument("--kill-after", type=float, default=3.0, help="seconds of streaming")
    sub.choices["crash"].add_argument("--streams", type=int, default=2, help="concurrent ingest clients")
    sub.choices["crash"].add_argument("--max-batches", type=int, default=2000)
    sub.choices["crash"].add_argument("--no-refresh", action="store_true",
                                      help="ingest only (do not re-issue forecasts after each batch)")
    a = p.parse_args(argv)
    if a.cmd == "load":
        res = run_load(a.db, a.dataset, a.clients, a.requests)
    else:
        res = run_crash(a.db, a.dataset, a.kill_after, a.streams, a.max_batches, refresh=not a.no_refresh)
    print(_table(res))
    if a.json is not None:
        a.json.write_text(json.dumps(res, indent=2, default=str))
    return 0 if res.get("ok", True) and not res.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
