"""Is a TCP address free to listen on? Used by scripts/up.sh before it compiles anything.

    python3 scripts/lib/port_check.py 127.0.0.1:8080

Exit 0: free. Exit 1: in use; prints `holder=<who>` (the process, from /proc/net/tcp{,6} and
/proc/*/fd, when this user may see it) and `free=<address>` (a free port on the same host).
Exit 2: the address cannot be used at all (bad address, not local, no permission); prints
`error=<why>` and, when there is one, `free=`.
"""
import errno
import os
import socket
import sys

NEARBY = 20


def parse(addr):
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return host, int(port)


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def try_bind(host, port):
    """Binds as the control plane does (SO_REUSEADDR); returns the bound port or raises OSError."""
    s = socket.socket(family(host), socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1)
        return s.getsockname()[1]
    finally:
        s.close()


def free_near(host, port):
    for p in range(port + 1, min(port + NEARBY, 65535) + 1):
        try:
            return try_bind(host, p)
        except OSError:
            pass
    try:
        return try_bind(host, 0)
    except OSError:
        return None


def decode(local):
    ip, _, port = local.partition(":")
    words = [int(ip[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(ip), 8)]
    raw = b"".join(words)
    fam = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(fam, raw), int(port, 16)


def unspecified(ip):
    return ip in ("0.0.0.0", "::")


def holder(host, port):
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":
                continue
            try:
                ip, p = decode(f[1])
            except ValueError:
                continue
            mapped = ip[7:] if ip.startswith("::ffff:") else ip
            if p == port and (mapped == host or ip == host or unspecified(ip) or unspecified(host)):
                found.append((f[9], f[7]))
    if not found:
        return None
    inode, uid = found[0]
    want = "socket:[%s]" % inode
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == want:
                    cmd = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
                    cmd = " ".join(a.decode(errors="replace") for a in cmd if a)[:100]
                    return "pid %s (%s)" % (pid, cmd or "?")
            except OSError:
                continue
    return "a process of uid %s that this user cannot inspect (as that user or root: ss -ltnp)" % uid


def main():
    try:
        host, port = parse(sys.argv[1])
    except (IndexError, ValueError):
        print("error=expected an address such as 127.0.0.1:8080")
        return 2
    try:
        try_bind(host, port)
        return 0
    except OSError as e:
        free = free_near(host, port)
        if e.errno == errno.EADDRINUSE:
            print("holder=%s" % (holder(host, port) or "another program (this system did not say which)"))
            code = 1
        else:
            print("error=%s" % e.strerror)
            code = 2
        if free is not None:
            print("free=%s" % ("[%s]:%d" % (host, free) if ":" in host else "%s:%d" % (host, free)))
        return code


if __name__ == "__main__":
    sys.exit(main())
