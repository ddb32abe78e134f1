"""What a container runtime does between fork and exec, run as root inside the pod's fresh mount and UTS
namespaces (`unshare --mount --uts`), then exec'd into the container's command.

`python -I -S prelude.py SPEC.json`. SPEC: mounts (volumes, /etc/hosts, ...), whether the root is
read-only, hostname, workdir, uid/gid/groups, no_new_privs, env and command. With "enter": <pid> it
joins that container's namespaces, drops privileges and execs (`kubectl exec`, a preStop). Stdlib
only: it runs before the image's interpreter, with no site-packages.
"""

import ctypes
import json
import os
import socket
import subprocess
import sys

PR_SET_NO_NEW_PRIVS = 38
# the API filesystems a runtime mounts itself (rw); everything else under / is the image
KEEP_WRITABLE = ("/proc", "/dev")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p.replace("\\040", " ") for p in points]


def under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def expose(python_home: str, hidden: str, stage: str) -> None:
    """The image's interpreter must be readable by the pod's user; on a host where it lives under a
    private directory (pyenv under /root), put a bare tmpfs over that directory with only the
    interpreter's prefix inside it (a container sees none of the host's /root anyway)."""
    mount("--bind", python_home, stage)
    mount("-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", hidden)
    os.makedirs(python_home, exist_ok=True)
    mount("--move", stage, python_home)


def setup_mounts(spec: dict) -> None:
    if spec.get("expose"):
        expose(**spec["expose"])
    volumes = []
    for m in spec["mounts"]:
        target = m["target"]
        if m.get("file"):
            if not os.path.exists(target):
                raise SystemExit(f"prelude: {target} does not exist")
        else:
            os.makedirs(target, exist_ok=True)
        mount("--bind", m["source"], target)
        if m.get("readOnly"):
            mount("-o", "remount,bind,ro", target)
        if m.get("volume"):
            volumes.append(target)
    if spec["readOnlyRoot"]:
        for point in mount_points():
            if under(point, volumes) or under(point, list(KEEP_WRITABLE)):
                continue
            # the files a kubelet manages (/etc/hosts, ...) stay as it mounted them
            if point in {m["target"] for m in spec["mounts"] if m.get("file")}:
                continue
            subprocess.run(["mount", "-o", "remount,bind,ro", point], check=False, stderr=subprocess.DEVNULL)


def enter(pid: int) -> None:
    """Into a running container's namespaces (`kubectl exec`); the mount namespace's root and working
    directory become the container's."""
    libc = ctypes.CDLL(None, use_errno=True)
    for kind in ("net", "uts", "mnt"):
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0) != 0:
                raise OSError(ctypes.get_errno(), f"setns({kind})")
        finally:
            os.close(fd)


def drop_privileges(spec: dict) -> None:
    os.setgroups(spec["groups"])
    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
    os.setresuid(spec["uid"], spec["uid"], spec["uid"])  # from uid 0 to non-zero: capabilities go
    if spec["noNewPrivs"]:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if spec.get("enter"):
        enter(spec["enter"])
    else:
        setup_mounts(spec)
        socket.sethostname(spec["hostname"])
    os.chdir(spec["workdir"])
    drop_privileges(spec)
    command = spec["command"]
    try:
        os.execvpe(command[0], command, spec["env"])
    except OSError as error:  # what a runtime reports as StartError; 127/126 like a shell
        print(f"prelude: exec {command[0]!r}: {error}", file=sys.stderr, flush=True)
        os._exit(127 if isinstance(error, FileNotFoundError) else 126)


if __name__ == "__main__":
    main()
