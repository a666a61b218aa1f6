#!/usr/bin/env python3
"""The Kubernetes API double's contract with the official Python client (PyPI's `kubernetes`).

Run by tests/tests/kube_double_python.rs against a double with its Docker-backed kubelet:

    python3 kube_client_contract.py --kubeconfig PATH --image IMAGE --prefix NAME \
        --expect-protocol v5.channel.k8s.io|v4.channel.k8s.io

With `load_kube_config`, `CoreV1Api`, `watch.Watch` and `stream.stream` it creates two pods (a
sleeper, and an echoer whose main process echoes its stdin), watches them from the version of a
list made before they were created until both run, lists them by label, reads them, execs with
stdin (exit codes 0 and 7, stdout and stderr apart), attaches to the echoer, reads its log,
deletes both and waits for the DELETED events and the 404s, and checks the API's `Status` of a
missing pod. `--expect-protocol` is the exec/attach subprotocol the double is expected to pick
(the client offers v5 then v4; a double made v4-only picks v4).

Every check prints `ok:` or `FAIL:` with what was expected and what came; the exit status is 1
when any check failed, 2 on bad arguments, 3 when the `kubernetes` module is missing.
"""

import argparse
import json
import sys
import time
import traceback

try:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
    from kubernetes.stream import stream
except ImportError as missing:
    print(
        f"FAIL: the Python `kubernetes` client is not installed ({missing}): "
        "run `bash scripts/setup.sh` (it pip-installs `kubernetes`)",
        file=sys.stderr,
    )
    sys.exit(3)

NAMESPACE = "default"
V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"

# How long a started process in a container gets to answer a line written to its stdin
# (docker exec into a running container answers in well under a second).
ANSWER_WITHIN = 10.0


class Checks:
    """Counts and prints the checks; a failed one does not stop the run."""

    def __init__(self):
        self.failures = []
        self.passed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"ok: {what}", flush=True)
        else:
            self.failures.append(f"{what}: {detail}" if detail else what)
            print(f"FAIL: {what}" + (f"\n      {detail}" if detail else ""), flush=True)
        return ok

    def equal(self, got, expected, what):
        return self.check(got == expected, what, f"expected {expected!r}, got {got!r}")


def step(title):
    print(f"== {title}", flush=True)


def status_body(error):
    """The API `Status` of an ApiException's body, or None."""
    try:
        return json.loads(error.body)
    except (TypeError, ValueError):
        return None


def pod_body(name, labels, image, command):
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[
                client.V1Container(
                    name="main",
                    image=image,
                    image_pull_policy="Never",
                    stdin=True,
                    command=command,
                )
            ],
        ),
    )


def is_running(pod):
    return pod.status is not None and pod.status.phase == "Running"


def expect_404(checks, call, what, name):
    """`call()` must raise the API server's 404 NotFound for pod `name`."""
    try:
        call()
    except ApiException as error:
        checks.equal(error.status, 404, f"{what}: the HTTP status")
        checks.equal(error.reason, "Not Found", f"{what}: the HTTP reason phrase")
        body = status_body(error)
        checks.check(body is not None, f"{what}: the body is JSON", repr(error.body))
        if body is not None:
            checks.equal(
                (body.get("kind"), body.get("apiVersion"), body.get("status")),
                ("Status", "v1", "Failure"),
                f"{what}: a v1 Status of Failure",
            )
            checks.equal(
                (body.get("reason"), body.get("code")),
                ("NotFound", 404),
                f"{what}: reason and code",
            )
            checks.equal(
                body.get("message"), f'pods "{name}" not found', f"{what}: the message"
            )
            checks.equal(
                body.get("details"),
                {"name": name, "kind": "pods"},
                f"{what}: the details",
            )
        return
    checks.check(False, f"{what}: an ApiException 404", "the call succeeded")


def drain(session, seconds):
    """Reads a session's stdout and stderr apart until it closes or `seconds` pass."""
    out, err = "", ""
    deadline = time.time() + seconds
    while session.is_open() and time.time() < deadline:
        session.update(timeout=min(0.5, max(0.0, deadline - time.time())))
        out += session.read_stdout(timeout=0)
        err += session.read_stderr(timeout=0)
    # What arrived with the last frames (before the close).
    out += session.read_stdout(timeout=0)
    err += session.read_stderr(timeout=0)
    return out, err


def write_line_and_wait(checks, session, line, what, answered):
    """Writes `line` (a str: the client sends a TEXT frame, as every caller of
    `write_stdin(str)` does) and waits for `answered()`. When nothing comes, writes it again
    as bytes (a BINARY frame) to tell a double that drops TEXT frames from a broken session.
    """
    session.write_stdin(line)
    deadline = time.time() + ANSWER_WITHIN
    while time.time() < deadline and not answered():
        if not session.is_open():
            break
        session.update(timeout=0.2)
    if answered():
        checks.check(True, f"{what}: stdin written as a str (a TEXT frame) reaches the process")
        return
    diagnosis = (
        "nothing came back within "
        f"{ANSWER_WITHIN:.0f} s of writing {line!r} with write_stdin(str); the client sends a "
        "str as a WebSocket TEXT frame (opcode 1) whose payload is '\\x00' + the data, and the "
        "API server takes TEXT and BINARY frames alike on channel 0 (stdin)"
    )
    if session.is_open():
        session.write_stdin(line.encode())
        deadline = time.time() + ANSWER_WITHIN
        while time.time() < deadline and not answered() and session.is_open():
            session.update(timeout=0.2)
        if answered():
            diagnosis += (
                "; the same line sent as bytes (a BINARY frame) was answered, so the double "
                "drops TEXT frames: kube_exec.rs should treat Message::Text like "
                "Message::Binary (first byte the channel)"
            )
        else:
            diagnosis += "; as bytes (a BINARY frame) it went unanswered too"
    checks.check(False, f"{what}: stdin written as a str (a TEXT frame) reaches the process", diagnosis)


def exec_session(v1, pod, command):
    return stream(
        v1.connect_get_namespaced_pod_exec,
        pod,
        NAMESPACE,
        container="main",
        command=command,
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )


def check_exec(checks, v1, pod, protocol, script, line, want_out, want_err, want_code):
    what = f"exec {script!r}"
    session = exec_session(v1, pod, ["sh", "-c", script])
    try:
        checks.equal(session.subprotocol, protocol, f"{what}: the negotiated subprotocol")
        collected = {"out": "", "err": ""}

        def answered():
            collected["out"] += session.read_stdout(timeout=0)
            collected["err"] += session.read_stderr(timeout=0)
            return want_out.strip() in collected["out"] or not session.is_open()

        write_line_and_wait(checks, session, line, what, answered)
        out, err = drain(session, ANSWER_WITHIN)
        out, err = collected["out"] + out, collected["err"] + err
        session.run_forever(timeout=ANSWER_WITHIN)
        checks.check(
            not session.is_open(),
            f"{what}: the server closes the session when the process ends",
            f"still open {ANSWER_WITHIN:.0f} s later",
        )
        checks.equal(out, want_out, f"{what}: stdout (channel 1)")
        checks.equal(err, want_err, f"{what}: stderr (channel 2)")
        try:
            code = session.returncode
        except Exception as error:  # the status frame did not parse as the client wants it
            code = f"returncode raised {error!r}"
        checks.equal(code, want_code, f"{what}: returncode from the status frame (channel 3)")
    finally:
        session.close()


def check_exec_eof(checks, v1, pod):
    """v5 only: the client ends stdin alone (close_channel(0)) and the process sees EOF."""
    what = "exec 'cat; echo end' with stdin closed by close_channel(0) (v5)"
    session = exec_session(v1, pod, ["sh", "-c", "cat; echo end; exit 3"])
    try:
        session.write_stdin(b"one\ntwo\n")
        session.close_channel(0)
        out, err = drain(session, ANSWER_WITHIN)
        session.run_forever(timeout=ANSWER_WITHIN)
        checks.check(
            not session.is_open(),
            f"{what}: the process ends at the end of stdin",
            f"still open {2 * ANSWER_WITHIN:.0f} s later (stdout so far {out!r})",
        )
        checks.equal((out, err), ("one\ntwo\nend\n", ""), f"{what}: stdout and stderr")
        checks.equal(session.returncode if not session.is_open() else None, 3, f"{what}: returncode")
    finally:
        session.close()


def watch_until_running(checks, v1, selector, since, names, seconds):
    """Watches from `since` (re-watching from the last version seen after each server-side
    timeout, listing again after a 410) until every pod of `names` runs."""
    seen_types = {name: [] for name in names}
    running = set()
    version = since
    watches = 0
    deadline = time.time() + seconds
    while running != set(names) and time.time() < deadline:
        watches += 1
        w = watch.Watch()
        try:
            for event in w.stream(
                v1.list_namespaced_pod,
                NAMESPACE,
                label_selector=selector,
                resource_version=version,
                timeout_seconds=5,
            ):
                pod = event["object"]
                name = pod.metadata.name
                if name not in seen_types:
                    checks.check(False, "a watch with a label selector sends only its pods", name)
                    continue
                seen_types[name].append(event["type"])
                if not isinstance(pod, client.V1Pod):
                    checks.check(False, "watch events carry V1Pod objects", repr(type(pod)))
                if event["raw_object"].get("kind") != "Pod":
                    checks.check(False, "watch events' raw objects are of kind Pod", repr(event["raw_object"])[:300])
                if is_running(pod):
                    running.add(name)
                if running == set(names) or time.time() >= deadline:
                    w.stop()
            # The version to go on from, as the client tracked it from the events.
            if w.resource_version:
                version = w.resource_version
        except ApiException as error:
            if error.status == 410:
                print(f"   the watch from {version} expired: listing again", flush=True)
                listed = v1.list_namespaced_pod(NAMESPACE, label_selector=selector)
                running |= {p.metadata.name for p in listed.items if is_running(p)}
                version = listed.metadata.resource_version
            else:
                raise
    checks.equal(sorted(running), sorted(names), f"both pods reach Running on the watch ({watches} watch request(s))")
    for name, types in seen_types.items():
        checks.check(
            types[:1] == ["ADDED"] and all(t in ("ADDED", "MODIFIED") for t in types),
            f"the watch from the version before {name} was created replays its ADDED, then MODIFIED",
            repr(types),
        )
    return version


def watch_until_deleted(checks, v1, selector, since, names, seconds):
    deleted = set()
    version = since
    deadline = time.time() + seconds
    while deleted != set(names) and time.time() < deadline:
        w = watch.Watch()
        for event in w.stream(
            v1.list_namespaced_pod,
            NAMESPACE,
            label_selector=selector,
            resource_version=version,
            timeout_seconds=5,
        ):
            if event["type"] == "DELETED":
                deleted.add(event["object"].metadata.name)
            if deleted == set(names) or time.time() >= deadline:
                w.stop()
        if w.resource_version:
            version = w.resource_version
    checks.equal(sorted(deleted), sorted(names), "the watch sees both pods DELETED")


def wait_gone(checks, v1, name, seconds):
    deadline = time.time() + seconds
    while True:
        try:
            v1.read_namespaced_pod(name, NAMESPACE)
        except ApiException as error:
            if error.status == 404:
                checks.check(True, f"{name} is gone (404 on read)")
                return
            raise
        if time.time() >= deadline:
            checks.check(False, f"{name} is gone (404 on read)", f"still readable after {seconds} s")
            return
        time.sleep(0.2)


def contract(checks, v1, args, created):
    prefix = args.prefix
    sleeper, echoer = f"{prefix}-sleeper", f"{prefix}-echo"
    selector = f"contract={prefix}"

    step("a missing pod: 404 NotFound")
    expect_404(checks, lambda: v1.read_namespaced_pod(f"{prefix}-missing", NAMESPACE), "read of a missing pod", f"{prefix}-missing")

    step("list (for a version to watch from) and create the pods")
    before = v1.list_namespaced_pod(NAMESPACE, label_selector=selector)
    checks.equal(before.items, [], "no pods of this run yet")
    since = before.metadata.resource_version
    checks.check(bool(since), "the list has a resourceVersion", repr(since))
    for name, role, command in [
        (sleeper, "sleeper", ["sleep", "infinity"]),
        (echoer, "echo", ["sh", "-c", "while read l; do echo seen:$l; done"]),
    ]:
        pod = v1.create_namespaced_pod(
            NAMESPACE, pod_body(name, {"contract": prefix, "role": role}, args.image, command)
        )
        created.append(name)
        checks.equal(pod.metadata.name, name, f"create {name}: the name")
        checks.check(bool(pod.metadata.uid), f"create {name}: a uid", repr(pod.metadata.uid))
        checks.check(
            pod.metadata.creation_timestamp is not None,
            f"create {name}: a creationTimestamp the client parses",
            repr(pod.metadata.creation_timestamp),
        )
        checks.equal(pod.status.phase if pod.status else None, "Pending", f"create {name}: phase")
        container = pod.spec.containers[0]
        checks.equal(
            (container.image, container.image_pull_policy, container.stdin, container.command),
            (args.image, "Never", True, command),
            f"create {name}: the container as asked",
        )
    try:
        v1.create_namespaced_pod(NAMESPACE, pod_body(sleeper, {"contract": prefix}, args.image, ["true"]))
        checks.check(False, "a second create of the same name is refused", "it succeeded")
    except ApiException as error:
        body = status_body(error) or {}
        checks.equal((error.status, body.get("reason")), (409, "AlreadyExists"), "a second create of the same name: 409 AlreadyExists")

    step("watch until Running")
    watch_until_running(checks, v1, selector, since, [sleeper, echoer], 90)

    step("list with label selectors")
    listed = v1.list_namespaced_pod(NAMESPACE, label_selector=selector)
    checks.equal(sorted(p.metadata.name for p in listed.items), sorted([sleeper, echoer]), f"list {selector}")
    listed = v1.list_namespaced_pod(NAMESPACE, label_selector=f"{selector},role=echo")
    checks.equal([p.metadata.name for p in listed.items], [echoer], f"list {selector},role=echo")
    listed = v1.list_namespaced_pod(NAMESPACE, label_selector=f"{selector},role!=echo")
    checks.equal([p.metadata.name for p in listed.items], [sleeper], f"list {selector},role!=echo")
    listed = v1.list_namespaced_pod(NAMESPACE, label_selector=f"{selector},role=none")
    checks.equal(listed.items, [], f"list {selector},role=none")

    step("read the pod")
    pod = v1.read_namespaced_pod(sleeper, NAMESPACE)
    checks.equal(pod.status.phase, "Running", "read: phase")
    checks.equal(pod.spec.restart_policy, "Never", "read: restartPolicy")
    statuses = pod.status.container_statuses or []
    checks.equal([s.name for s in statuses], ["main"], "read: one container status")
    if statuses:
        state = statuses[0].state
        checks.check(
            state is not None and state.running is not None and state.running.started_at is not None,
            "read: the container is running with a startedAt the client parses",
            repr(state),
        )
        checks.equal(statuses[0].ready, True, "read: the container is ready")

    step(f"exec (expecting {args.expect_protocol})")
    plain = stream(
        v1.connect_get_namespaced_pod_exec,
        sleeper,
        NAMESPACE,
        container="main",
        command=["sh", "-c", "echo plain; echo noise >&2"],
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
    )
    # Preloaded, the client returns stdout and stderr together, in the order they came.
    checks.equal(sorted(plain.splitlines()), ["noise", "plain"], "exec without stdin, preloaded: stdout and stderr")
    check_exec(checks, v1, sleeper, args.expect_protocol, "read x; echo ok:$x", "hello\n", "ok:hello\n", "", 0)
    check_exec(
        checks, v1, sleeper, args.expect_protocol,
        "read x; echo got:$x; echo err >&2; exit 7", "hello\n", "got:hello\n", "err\n", 7,
    )
    if args.expect_protocol == V5:
        check_exec_eof(checks, v1, sleeper)
    try:
        stream(
            v1.connect_get_namespaced_pod_exec, sleeper, NAMESPACE, container="nosuch",
            command=["true"], stdin=False, stdout=True, stderr=True, tty=False,
        )
        checks.check(False, "exec into an unknown container is refused", "it was accepted")
    except ApiException as error:
        # The client wraps the failed upgrade (a 400 instead of a 101).
        checks.check("400" in str(error.reason), "exec into an unknown container is refused with a 400", repr(error.reason))

    step("attach to the echoer")
    session = stream(
        v1.connect_get_namespaced_pod_attach,
        echoer,
        NAMESPACE,
        container="main",
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    try:
        checks.equal(session.subprotocol, args.expect_protocol, "attach: the negotiated subprotocol")
        lines = []

        def answered():
            if session.peek_stdout(timeout=0):
                lines.append(session.read_stdout(timeout=0))
            return "seen:" in "".join(lines)

        write_line_and_wait(checks, session, "first\n", "attach", answered)
        session.write_stdin(b"second\n")
        deadline = time.time() + ANSWER_WITHIN
        while "seen:second" not in "".join(lines) and time.time() < deadline and session.is_open():
            session.update(timeout=0.2)
            answered()
        got = "".join(lines)
        checks.check(
            "seen:second\n" in got,
            "attach: a line written as bytes comes back on stdout",
            f"stdout {got!r}",
        )
        checks.check(session.is_open(), "attach: the session stays open while the process runs")
        checks.equal(session.read_stderr(timeout=0), "", "attach: nothing on stderr")
    finally:
        session.close()
    time.sleep(1)
    pod = v1.read_namespaced_pod(echoer, NAMESPACE)
    checks.equal(pod.status.phase, "Running", "the echoer keeps running after the attach closed")

    step("logs")
    log = v1.read_namespaced_pod_log(echoer, NAMESPACE, container="main")
    checks.check("seen:second\n" in log, "the echoer's log has what it echoed", repr(log))
    log = v1.read_namespaced_pod_log(sleeper, NAMESPACE)
    checks.equal(log, "", "the sleeper's log (default container) is empty")
    expect_404(checks, lambda: v1.read_namespaced_pod_log(f"{prefix}-missing", NAMESPACE), "the log of a missing pod", f"{prefix}-missing")

    step("delete the pods and wait for them to be gone")
    since = v1.list_namespaced_pod(NAMESPACE, label_selector=selector).metadata.resource_version
    for name in [sleeper, echoer]:
        deleted = v1.delete_namespaced_pod(name, NAMESPACE)
        checks.equal(getattr(getattr(deleted, "metadata", None), "name", None), name, f"delete {name}: the answer names it")
    watch_until_deleted(checks, v1, selector, since, [sleeper, echoer], 30)
    for name in [sleeper, echoer]:
        wait_gone(checks, v1, name, 30)
        created.remove(name)
    expect_404(checks, lambda: v1.read_namespaced_pod(sleeper, NAMESPACE), "read of a deleted pod", sleeper)
    expect_404(checks, lambda: v1.delete_namespaced_pod(sleeper, NAMESPACE), "delete of a deleted pod", sleeper)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--image", required=True, help="the pods' image (on the engine already)")
    parser.add_argument("--prefix", required=True, help="the pods' name prefix and label")
    parser.add_argument("--expect-protocol", choices=[V5, V4], required=True)
    args = parser.parse_args()

    import kubernetes

    print(f"kubernetes client {kubernetes.__version__}, expecting {args.expect_protocol}", flush=True)
    config.load_kube_config(config_file=args.kubeconfig)
    v1 = client.CoreV1Api()
    checks = Checks()
    created = []
    try:
        contract(checks, v1, args, created)
    except Exception:
        checks.failures.append("the run stopped on an exception (above)")
        print("FAIL: the run stopped on an exception:", flush=True)
        traceback.print_exc(file=sys.stdout)
    finally:
        for name in created:
            try:
                v1.delete_namespaced_pod(name, NAMESPACE)
            except ApiException:
                pass
    print(f"{checks.passed} checks passed, {len(checks.failures)} failed", flush=True)
    if checks.failures:
        for failure in checks.failures:
            print(f"  - {failure}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
