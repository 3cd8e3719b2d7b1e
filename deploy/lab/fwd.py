# fwd.py PORT -- one relay per guest connection for qemu's user-network guestfwd "cmd:" form:
# qemu runs `python3 fwd.py PORT` once per TCP connection the guest opens to the guestfwd
# address, with that connection on stdin/stdout; this relays it to 127.0.0.1:PORT on the host.
# (The "tcp:" form of guestfwd serves only the first connection.)
import os
import socket
import sys
import threading


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def main():
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    except OSError as e:
        sys.stderr.write("fwd.py: cannot connect to 127.0.0.1:%s: %s\n" % (sys.argv[1], e))
        return 1

    def up():
        try:
            while True:
                d = os.read(0, 65536)
                if not d:
                    s.shutdown(socket.SHUT_WR)
                    return
                s.sendall(d)
        except OSError:
            s.close()

    threading.Thread(target=up, daemon=True).start()
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            write_all(1, d)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
