#!/usr/bin/env python3
"""The Step Runner's gRPC contract as an independent client sees it: Python's grpcio, with stubs
that grpcio-tools generates from OUR `steps/proto/step.proto` at run time (into a temporary
directory, never into the repository).

Run by tests/tests/steps_python.rs against `gitlab-runner-rs steps serve` (directly, or through
`steps proxy` behind a second socket):

    python3 steps_grpc_contract.py --socket PATH [--authority NAME] [--proto-dir DIR]

`--authority` sets the HTTP/2 `:authority` the channel sends (grpc's `grpc.default_authority`);
without it grpc-core sends its default for a `unix:` target (the percent-encoded socket path).

It checks, over `grpc.insecure_channel("unix:" + PATH)`: Run then FollowLogs to the end (the
timestamped line format, `01O` and `01E`, the `Running step name=` lines) then Status success,
for a JSON step list and for upstream's two-document YAML; that a second Run with a known id
starts nothing; a failing step (exit code 3, `exit status 3`, kind step_failure); masking of a
masked job variable and of a request phrase; FollowLogs resumed from offsets inside the log
giving exactly the tail; FollowSteps results with a step's output, exec result and a failing
step's exit code; Cancel of a sleeping step (SIGTERM reaches it; cancelled, kind cancelled);
a request past timeout_seconds (kind timeout); Status of all; NOT_FOUND for unknown ids;
Close and Finish (of a finished and of a running request) then NOT_FOUND, both idempotent;
INVALID_ARGUMENT for bad definitions and an empty id.

Every check prints `ok: ...`; the first failed one prints `FAIL: ...` with what was sent,
what came back and what was expected, and the script exits 1. Exit 2: bad arguments or the
stubs could not be generated; 3: `grpc` or `grpc_tools` is missing.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True

try:
    import grpc
    import grpc_tools
except ImportError as missing:
    print(
        f"FAIL: Python's grpcio / grpcio-tools are not installed ({missing}): "
        "run `bash scripts/setup.sh`",
        file=sys.stderr,
    )
    sys.exit(3)

# `<27-char UTC timestamp> 01O <body>` (stdout) or `01E` (stderr); `+` marks a continued line.
LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) 01([OE])(\+?) (.*)$")

# How long a request may take to end after Cancel, or past its 1 s timeout.
END_WITHIN = 20.0
# A bound on each streaming call, so a stream that never ends fails the run instead of hanging.
STREAM_DEADLINE = 90.0
UNARY_DEADLINE = 30.0

pb = None  # step_pb2, once generated
pbg = None  # step_pb2_grpc


class ContractFailure(Exception):
    pass


def ok(what):
    print(f"ok: {what}", flush=True)


def fail(what, detail=""):
    raise ContractFailure(f"{what}\n      {detail}" if detail else what)


def check(condition, what, detail=""):
    if not condition:
        fail(what, detail)
    ok(what)


def equal(got, expected, what):
    check(got == expected, what, f"expected {expected!r}, got {got!r}")


def section(title):
    print(f"== {title}", flush=True)


def generate_stubs(proto_dir, out_dir):
    """step_pb2 / step_pb2_grpc from OUR proto, into `out_dir`."""
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{well_known}",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(proto_dir, "step.proto"),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(
            f"FAIL: grpc_tools.protoc failed ({done.returncode}): {' '.join(command)}\n"
            f"{done.stdout}{done.stderr}",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.path.insert(0, out_dir)
    global pb, pbg
    import step_pb2
    import step_pb2_grpc

    pb, pbg = step_pb2, step_pb2_grpc


def status_name(value):
    return pb.StepResult.Status.Name(value)


def kind_name(value):
    return pb.StatusError.ErrorKind.Name(value)


def describe(job):
    """One line of a Status, for failure messages."""
    return (
        f"id={job.id!r} status={status_name(job.status)} exit_code={job.exit_code} "
        f"message={job.message!r} error={{message={job.error.message!r} "
        f"kind={kind_name(job.error.kind)}}} has_error={job.HasField('error')} "
        f"start={job.HasField('start_time')} end={job.HasField('end_time')} "
        f"finished={job.finished}"
    )


def rpc_error(call, expected_code, what):
    """Runs `call` (which must fail with `expected_code`); returns the error's details."""
    try:
        got = call()
    except grpc.RpcError as error:
        check(
            error.code() == expected_code,
            what,
            f"expected {expected_code}, got {error.code()}: {error.details()!r}",
        )
        return error.details()
    fail(what, f"expected {expected_code}, the call succeeded with {got!r}")


class Client:
    def __init__(self, stub, work_dir):
        self.stub = stub
        self.work_dir = work_dir
        self.started = []

    def run(self, id, steps, **fields):
        """Run (no gRPC deadline: the service takes a Run call's deadline as the request's)."""
        request = pb.RunRequest(id=id, work_dir=self.work_dir, steps=steps, **fields)
        try:
            self.stub.Run(request)
        except grpc.RpcError as error:
            fail(
                f"Run {id!r}",
                f"sent steps={steps!r}, got {error.code()}: {error.details()!r}, expected OK",
            )
        if id not in self.started:
            self.started.append(id)

    def status(self, id):
        try:
            response = self.stub.Status(pb.StatusRequest(id=id), timeout=UNARY_DEADLINE)
        except grpc.RpcError as error:
            fail(f"Status {id!r}", f"got {error.code()}: {error.details()!r}, expected OK")
        if len(response.jobs) != 1 or response.jobs[0].id != id:
            fail(f"Status {id!r}", f"expected one job {id!r}, got {response}")
        return response.jobs[0]

    def logs(self, id, offset=0):
        """FollowLogs from `offset` to the stream's end, joined."""
        try:
            return b"".join(
                response.data
                for response in self.stub.FollowLogs(
                    pb.FollowLogsRequest(id=id, offset=offset), timeout=STREAM_DEADLINE
                )
            )
        except grpc.RpcError as error:
            fail(
                f"FollowLogs {id!r} from {offset}",
                f"got {error.code()}: {error.details()!r}, expected the log then the end",
            )

    def steps(self, id):
        """FollowSteps to the stream's end."""
        try:
            return [
                response.result
                for response in self.stub.FollowSteps(
                    pb.FollowStepsRequest(id=id), timeout=STREAM_DEADLINE
                )
            ]
        except grpc.RpcError as error:
            fail(
                f"FollowSteps {id!r}",
                f"got {error.code()}: {error.details()!r}, expected results then the end",
            )

    def wait_ended(self, id, within):
        """The request's Status once it has an end time, and how long that took."""
        start = time.monotonic()
        while True:
            job = self.status(id)
            if job.HasField("end_time"):
                return job, time.monotonic() - start
            if time.monotonic() - start > within:
                fail(f"{id!r} ends within {within:.0f} s", f"still: {describe(job)}")
            time.sleep(0.1)


def parse_log(data, what):
    """The log's lines as (stream, body); every line must be in the timestamped format."""
    check(data.endswith(b"\n"), f"{what}: the log ends with a newline", repr(data[-80:]))
    lines = []
    for raw in data.split(b"\n")[:-1]:
        match = LINE.match(raw)
        if not match:
            fail(f"{what}: every log line is `<timestamp> 01O|01E <body>`", f"line {raw!r}")
        lines.append((match.group(2).decode(), match.group(4).decode()))
    ok(f"{what}: all {len(lines)} log lines are `<27-char UTC timestamp> 01O|01E <body>`")
    return lines


def check_success(job, what):
    check(
        job.status == pb.StepResult.success
        and job.exit_code == 0
        and not job.HasField("error")
        and job.HasField("start_time")
        and job.HasField("end_time")
        and job.start_time.ToNanoseconds() <= job.end_time.ToNanoseconds(),
        f"{what}: Status is success, exit code 0, no error, start <= end",
        describe(job),
    )


def contract(client, stub, prefix, work_dir):
    def name(suffix):
        return f"{prefix}-{suffix}"

    section("Run, FollowLogs to the end, Status: a JSON step list")
    hello = name("hello")
    client.run(hello, '[{"name":"hello","script":"echo hello; echo to-stderr >&2"}]')
    lines = parse_log(client.logs(hello), hello)
    # stdout and stderr are apart (two pipes): their lines keep their order within a stream.
    equal(lines[0], ("O", "Running step name=hello"), f"{hello}: the log starts with the step")
    equal(
        sorted(lines[1:]),
        [("E", "to-stderr"), ("O", "hello")],
        f"{hello}: then its stdout line (01O) and its stderr line (01E)",
    )
    check_success(client.status(hello), hello)

    section("upstream's two-document YAML definition")
    yaml = name("yaml")
    client.run(
        yaml,
        "{}\n---\nrun:\n  - name: first\n    script: echo from-yaml-1\n"
        "  - name: second\n    script: echo from-yaml-2\n",
    )
    lines = parse_log(client.logs(yaml), yaml)
    equal(
        lines,
        [
            ("O", "Running step name=first"),
            ("O", "from-yaml-1"),
            ("O", "Running step name=second"),
            ("O", "from-yaml-2"),
        ],
        f"{yaml}: both steps ran in order",
    )
    check_success(client.status(yaml), yaml)

    section("a second Run with a known id starts nothing")
    idem = name("idem")
    client.run(idem, '[{"name":"original","script":"sleep 1; echo original-ran"}]')
    client.run(idem, '[{"name":"replacement","script":"echo replacement-ran"}]')
    ok(f"{idem}: a second Run while the first runs succeeds")
    log = client.logs(idem)
    check(
        b"original-ran" in log
        and b"replacement-ran" not in log
        and b"name=replacement" not in log,
        f"{idem}: only the first Run's steps ran",
        repr(log),
    )
    ended = client.status(idem)
    check_success(ended, idem)
    client.run(idem, '[{"name":"replacement","script":"echo replacement-ran"}]')
    time.sleep(0.5)
    again = client.status(idem)
    check(
        again.end_time == ended.end_time and again.status == ended.status,
        f"{idem}: a Run after the end succeeds and changes nothing",
        f"before: {describe(ended)}\n      after: {describe(again)}",
    )
    equal(client.logs(idem), log, f"{idem}: the log is unchanged")

    section("a failing step")
    bad = name("bad")
    client.run(bad, '[{"name":"bad","script":"echo before-failing; exit 3"}]')
    log = client.logs(bad)
    check(b"before-failing" in log, f"{bad}: the failing step's output is logged", repr(log))
    job = client.status(bad)
    check(
        job.status == pb.StepResult.failure
        and job.exit_code == 3
        and "exit status 3" in job.message
        and job.HasField("error")
        and job.error.kind == pb.StatusError.step_failure
        and "exit status 3" in job.error.message,
        f"{bad}: failure, exit code 3, `exit status 3` in message and error, "
        "kind step_failure",
        describe(job),
    )
    results = client.steps(bad)
    check(
        len(results) == 1
        and results[0].step == "bad"
        and results[0].status == pb.StepResult.failure
        and results[0].exec_result.exit_code == 3,
        f"{bad}: FollowSteps has the step failed with exit code 3",
        repr(results),
    )

    section("masking")
    secret = "s3cr3t-v4lue-x9"
    phrase = "phrase-to-hide-q7"
    masked = name("masked")
    client.run(
        masked,
        '[{"name":"leak","script":'
        '"echo job-secret=${{ job.SECRET_TOKEN }}; echo ' + secret + ' >&2; '
        'echo plain=${{ job.PLAIN }}; echo phrase=' + phrase + '"}]',
        job=pb.Job(
            variables=[
                pb.Variable(key="SECRET_TOKEN", value=secret, masked=True),
                pb.Variable(key="PLAIN", value="plain-value"),
            ]
        ),
        masking=pb.Masking(phrases=[phrase]),
    )
    log = client.logs(masked)
    lines = parse_log(log, masked)
    check(
        secret.encode() not in log and phrase.encode() not in log,
        f"{masked}: neither the masked variable's value nor the phrase is in the log",
        repr(log),
    )
    check(
        ("O", "job-secret=[MASKED]") in lines
        and ("E", "[MASKED]") in lines
        and ("O", "phrase=[MASKED]") in lines,
        f"{masked}: both are `[MASKED]`, on stdout and stderr",
        repr(lines),
    )
    check(("O", "plain=plain-value") in lines, f"{masked}: an unmasked variable shows", repr(lines))
    check_success(client.status(masked), masked)

    section("FollowLogs resumed from an offset")
    tail = name("tail")
    client.run(
        tail,
        '[{"name":"count","script":"for i in $(seq 1 12); do echo line-$i; echo err-$i >&2; '
        'sleep 0.05; done"}]',
    )
    full = client.logs(tail)
    parse_log(full, tail)
    boundary = full.index(b"\n", len(full) // 2) + 1
    for offset in [0, 1, len(full) // 3, boundary, len(full) // 2 + 7, len(full) - 1, len(full)]:
        part = client.logs(tail, offset)
        check(
            part == full[offset:],
            f"{tail}: FollowLogs from offset {offset} of {len(full)} is exactly the tail",
            f"expected {full[offset:]!r}\n      got {part!r}",
        )
    # A follower started mid-run from an offset gets the tail too.
    live = name("live")
    client.run(
        live,
        '[{"name":"slow","script":"echo first-half; sleep 1; echo second-half"}]',
    )
    time.sleep(0.5)
    probe = stub.FollowLogs(pb.FollowLogsRequest(id=live), timeout=STREAM_DEADLINE)
    start = len(next(probe).data)
    probe.cancel()
    resumed = client.logs(live, start)
    full = client.logs(live)
    check(
        resumed == full[start:] and b"second-half" in resumed,
        f"{live}: a follower from offset {start} while the run runs gets exactly the tail",
        f"full {full!r}\n      resumed {resumed!r}",
    )

    section("FollowSteps")
    out = name("outputs")
    script_one = "echo one"
    client.run(
        out,
        '[{"name":"first","script":"' + script_one + '"},'
        '{"name":"out","script":"sleep 0.3; '
        "echo '{\\\"name\\\":\\\"x\\\",\\\"value\\\":\\\"y\\\"}' >> \\\"${{ output_file }}\\\"\"}]",
    )
    results = client.steps(out)
    equal([r.step for r in results], ["first", "out"], f"{out}: one result per step, in order")
    check(
        all(r.status == pb.StepResult.success for r in results),
        f"{out}: both succeeded",
        repr(results),
    )
    x = results[1].outputs.get("x")
    check(
        x is not None and x.WhichOneof("kind") == "string_value" and x.string_value == "y",
        f'{out}: outputs["x"].string_value == "y"',
        repr(results[1].outputs),
    )
    first = results[0].exec_result
    check(
        first.exit_code == 0
        and first.work_dir == work_dir
        and len(first.command) > 0
        and any(script_one in part for part in first.command),
        f"{out}: exec_result has the command, the work dir and exit code 0",
        repr(first),
    )
    check_success(client.status(out), out)
    again = client.steps(out)
    equal(
        [(r.step, r.status) for r in again],
        [(r.step, r.status) for r in results],
        f"{out}: FollowSteps after the end replays the results",
    )

    section("Cancel")
    cancel = name("cancel")
    client.run(
        cancel,
        '[{"name":"sleeper","script":"trap \'echo got-sigterm; exit 143\' TERM; '
        'echo sleeping; sleep 60 & wait"}]',
        graceful_exit_timeout_seconds=10,
    )
    stream = stub.FollowLogs(pb.FollowLogsRequest(id=cancel), timeout=STREAM_DEADLINE)
    seen = b""
    try:
        for response in stream:
            seen += response.data
            if b"sleeping" in seen:
                break
    except grpc.RpcError as error:
        fail(f"FollowLogs {cancel!r}", f"got {error.code()}: {error.details()!r}")
    check(b"sleeping" in seen, f"{cancel}: the step runs", repr(seen))
    running = client.status(cancel)
    equal(status_name(running.status), "running", f"{cancel}: Status says running")
    started = time.monotonic()
    try:
        stub.Cancel(pb.CancelRequest(id=cancel), timeout=UNARY_DEADLINE)
    except grpc.RpcError as error:
        fail(f"Cancel {cancel!r}", f"got {error.code()}: {error.details()!r}, expected OK")
    ok(f"{cancel}: Cancel succeeds")
    try:
        for response in stream:
            seen += response.data
    except grpc.RpcError as error:
        fail(
            f"FollowLogs {cancel!r} after Cancel",
            f"got {error.code()}: {error.details()!r}, expected the stream to end",
        )
    took = time.monotonic() - started
    check(took < END_WITHIN, f"{cancel}: the log stream ends {took:.1f} s after Cancel")
    check(
        b"got-sigterm" in seen,
        f"{cancel}: the step's shell got SIGTERM (its trap ran)",
        repr(seen),
    )
    job, _ = client.wait_ended(cancel, END_WITHIN)
    check(
        job.status == pb.StepResult.cancelled
        and job.HasField("error")
        and job.error.kind == pb.StatusError.cancelled,
        f"{cancel}: Status is cancelled, kind cancelled",
        describe(job),
    )
    try:
        stub.Cancel(pb.CancelRequest(id=cancel), timeout=UNARY_DEADLINE)
    except grpc.RpcError as error:
        fail(f"Cancel {cancel!r} again", f"got {error.code()}: {error.details()!r}")
    equal(describe(client.status(cancel)), describe(job), f"{cancel}: a second Cancel changes nothing")

    section("timeout_seconds")
    timeout = name("timeout")
    started = time.monotonic()
    client.run(
        timeout,
        '[{"name":"long","script":"sleep 30"}]',
        timeout_seconds=1,
        graceful_exit_timeout_seconds=2,
    )
    job, _ = client.wait_ended(timeout, END_WITHIN)
    took = time.monotonic() - started
    check(
        job.HasField("error")
        and job.error.kind == pb.StatusError.timeout
        and job.status == pb.StepResult.failure,
        f"{timeout}: ends after {took:.1f} s as a failure with error kind timeout",
        describe(job),
    )

    section("Status of all")
    try:
        everything = stub.Status(pb.StatusRequest(id=""), timeout=UNARY_DEADLINE)
    except grpc.RpcError as error:
        fail('Status ""', f"got {error.code()}: {error.details()!r}, expected OK")
    listed = [job.id for job in everything.jobs]
    missing = [id for id in client.started if id not in listed]
    check(not missing, f"Status of all lists the {len(client.started)} requests", f"missing {missing}, got {listed}")
    check(len(set(listed)) == len(listed), "Status of all lists each request once", repr(listed))
    by_id = {job.id: job for job in everything.jobs}
    equal(
        status_name(by_id[bad].status),
        "failure",
        f"Status of all has {bad} as failure",
    )

    section("unknown ids")
    unknown = name("never-started")
    rpc_error(
        lambda: stub.Status(pb.StatusRequest(id=unknown), timeout=UNARY_DEADLINE),
        grpc.StatusCode.NOT_FOUND,
        "Status of an unknown id is NOT_FOUND",
    )
    rpc_error(
        lambda: list(stub.FollowLogs(pb.FollowLogsRequest(id=unknown), timeout=STREAM_DEADLINE)),
        grpc.StatusCode.NOT_FOUND,
        "FollowLogs of an unknown id is NOT_FOUND",
    )
    rpc_error(
        lambda: list(stub.FollowSteps(pb.FollowStepsRequest(id=unknown), timeout=STREAM_DEADLINE)),
        grpc.StatusCode.NOT_FOUND,
        "FollowSteps of an unknown id is NOT_FOUND",
    )

    section("Close and Finish")
    for label, call in [
        ("Close", lambda id: stub.Close(pb.CloseRequest(id=id), timeout=UNARY_DEADLINE)),
        ("Finish", lambda id: stub.Finish(pb.FinishRequest(id=id), timeout=UNARY_DEADLINE)),
    ]:
        target = hello if label == "Close" else yaml
        for attempt in ["", " again"]:
            try:
                call(target)
            except grpc.RpcError as error:
                fail(f"{label} {target!r}{attempt}", f"got {error.code()}: {error.details()!r}")
            ok(f"{label} of a finished request{attempt} succeeds")
            rpc_error(
                lambda: stub.Status(pb.StatusRequest(id=target), timeout=UNARY_DEADLINE),
                grpc.StatusCode.NOT_FOUND,
                f"Status after {label}{attempt} is NOT_FOUND",
            )
        try:
            call(unknown)
        except grpc.RpcError as error:
            fail(f"{label} {unknown!r}", f"got {error.code()}: {error.details()!r}")
        ok(f"{label} of an unknown id succeeds")
        client.started.remove(target)

        # A running request: stopped, then forgotten.
        running = name(f"{label.lower()}-running")
        pid_file = os.path.join(work_dir, f"{running}.pid")
        client.run(
            running,
            '[{"name":"sleeper","script":"echo $$ > ' + pid_file + '; exec sleep 60"}]',
            graceful_exit_timeout_seconds=5,
        )
        deadline = time.monotonic() + END_WITHIN
        while not (os.path.exists(pid_file) and open(pid_file).read().strip()):
            if time.monotonic() > deadline:
                fail(f"{running}: the step starts", describe(client.status(running)))
            time.sleep(0.05)
        pid = int(open(pid_file).read().strip())
        started = time.monotonic()
        try:
            call(running)
        except grpc.RpcError as error:
            fail(f"{label} {running!r}", f"got {error.code()}: {error.details()!r}")
        took = time.monotonic() - started
        ok(f"{label} of a running request succeeds ({took:.1f} s)")
        rpc_error(
            lambda: stub.Status(pb.StatusRequest(id=running), timeout=UNARY_DEADLINE),
            grpc.StatusCode.NOT_FOUND,
            f"Status after {label} of a running request is NOT_FOUND",
        )
        alive = True
        while time.monotonic() - started < END_WITHIN:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive = False
                break
            time.sleep(0.1)
        check(not alive, f"{label} stopped the running step's process ({pid})")
        client.started.remove(running)
    try:
        everything = stub.Status(pb.StatusRequest(id=""), timeout=UNARY_DEADLINE)
    except grpc.RpcError as error:
        fail('Status ""', f"got {error.code()}: {error.details()!r}")
    listed = [job.id for job in everything.jobs]
    check(
        hello not in listed and yaml not in listed and set(client.started) <= set(listed),
        "Status of all no longer lists closed requests",
        repr(listed),
    )

    section("bad requests")
    for steps, what in [
        ('[{"name": 42, "script": }', "malformed JSON"),
        ('[{"name":"x"}]', "a step with nothing to run"),
        ("just some text", "not a step definition"),
    ]:
        id = name("invalid")
        details = rpc_error(
            lambda: stub.Run(pb.RunRequest(id=id, work_dir=work_dir, steps=steps)),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Run of {what} ({steps!r}) is INVALID_ARGUMENT",
        )
        check(bool(details), f"... with a message: {details!r}")
        rpc_error(
            lambda: stub.Status(pb.StatusRequest(id=id), timeout=UNARY_DEADLINE),
            grpc.StatusCode.NOT_FOUND,
            "... and the request is not known",
        )
    rpc_error(
        lambda: stub.Run(pb.RunRequest(id="", work_dir=work_dir, steps="[]")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Run with an empty id is INVALID_ARGUMENT",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the service's Unix socket")
    parser.add_argument("--authority", help="the :authority the channel sends")
    parser.add_argument(
        "--proto-dir",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "steps", "proto"),
        help="where step.proto is",
    )
    parser.add_argument("--prefix", default="py", help="request ids start with this")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.proto_dir, "step.proto")):
        parser.error(f"no step.proto in {args.proto_dir}")

    with tempfile.TemporaryDirectory(prefix="steps-grpc-contract-") as scratch:
        stubs = os.path.join(scratch, "stubs")
        work_dir = os.path.join(scratch, "work")
        os.makedirs(stubs)
        os.makedirs(work_dir)
        generate_stubs(os.path.abspath(args.proto_dir), stubs)
        ok(f"stubs generated from {os.path.abspath(args.proto_dir)}/step.proto")

        options = [("grpc.default_authority", args.authority)] if args.authority else []
        channel = grpc.insecure_channel("unix:" + args.socket, options=options)
        stub = pbg.StepRunnerStub(channel)
        authority = repr(args.authority) if args.authority else "grpc's default"
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            ok(f"connected to unix:{args.socket} (authority {authority})")
            try:
                stub.Status(pb.StatusRequest(id=""), timeout=UNARY_DEADLINE)
            except grpc.RpcError as error:
                fail(
                    f'the first call, Status "" (authority {authority})',
                    f"got {error.code()}: {error.details()!r}, expected OK"
                    + (
                        "\n      (a RST_STREAM with PROTOCOL_ERROR here is the server's HTTP/2 "
                        "layer rejecting the :authority grpc-core sends for a unix: target, "
                        "the percent-encoded socket path)"
                        if error.code() == grpc.StatusCode.INTERNAL
                        else ""
                    ),
                )
            ok(f"a first call succeeds (authority {authority})")
            contract(Client(stub, work_dir), stub, args.prefix, work_dir)
        except ContractFailure as failure:
            print(f"FAIL: {failure}", flush=True)
            return 1
        except grpc.FutureTimeoutError:
            print(f"FAIL: no connection to unix:{args.socket} within 10 s", flush=True)
            return 1
        finally:
            channel.close()
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
