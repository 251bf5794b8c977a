"""Python clients for mailsink's interop tests: smtplib and raw pipelined sockets.

Usage: smtp_client.py SCENARIO HOST PORT [ARGS...]; prints one JSON object on stdout.
Every socket has a timeout, so a scenario can never hang.
"""

import json
import smtplib
import socket
import ssl
import sys

TIMEOUT = 15


def unverified():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def send_plain(host, port):
    body = (
        b"From: py@example.org\r\nSubject: smtplib plain\r\n\r\n"
        b".starts with a dot\r\n..two\r\n\xc3\xa9t\xc3\xa9\r\n"
    )
    with smtplib.SMTP(host, int(port), local_hostname="py.example", timeout=TIMEOUT) as s:
        refused = s.sendmail("py@example.org", ["a@example.net", "b@example.net"], body)
        code, _ = s.noop()
    return {"refused": refused, "noop": code, "body": body.decode("utf-8")}


def starttls_auth(host, port, user, password):
    out = {}
    with smtplib.SMTP(host, int(port), local_hostname="py.example", timeout=TIMEOUT) as s:
        s.ehlo()
        out["auth_before_tls"] = s.has_extn("auth")
        out["starttls_offered"] = s.has_extn("starttls")
        code, _ = s.starttls(context=unverified())
        out["starttls"] = code
        s.ehlo()
        out["auth_after_tls"] = s.esmtp_features.get("auth", "")
        try:
            s.login(user, "wrong-" + password)
            out["wrong"] = 235
        except smtplib.SMTPAuthenticationError as e:
            out["wrong"] = e.smtp_code
        code, _ = s.login(user, password)
        out["login"] = code
        s.sendmail("py@example.org", ["tls@example.net"], b"Subject: smtplib tls auth\r\n\r\nsecret\r\n")
        out["cipher"] = s.sock.cipher()[0]
        out["version"] = s.sock.version()
    # AUTH LOGIN, explicitly.
    with smtplib.SMTP(host, int(port), local_hostname="py.example", timeout=TIMEOUT) as s:
        s.starttls(context=unverified())
        s.ehlo()
        s.user, s.password = user, password
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        out["login_mech"] = code
    return out


class Raw:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """One whole reply; returns its lines."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("closed inside a reply: %r" % self.buf)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return lines

    def codes(self, n):
        return [self.reply()[-1][:3] for _ in range(n)]

    def rest(self):
        data = self.buf
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def pipelined(host, port):
    c = Raw(host, port)
    out = {"greeting": c.reply()[0]}
    # One batch: greeting to DATA, with a refused recipient in the middle.
    c.send(
        b"EHLO raw.example\r\nMAIL FROM:<raw@example.org>\r\nRCPT TO:<one@example.net>\r\n"
        b"RCPT TO:<bad address>\r\nRCPT TO:<two@example.net>\r\nDATA\r\n"
    )
    out["batch1"] = c.codes(6)
    # The message, then a second transaction by BDAT and QUIT, all in one write.
    chunk = b"Subject: bdat\r\n\r\nbinary\x00\r\n.\r\n"
    c.send(
        b"Subject: pipelined\r\n\r\nfirst\r\n.\r\n"
        b"MAIL FROM:<raw@example.org>\r\nRCPT TO:<three@example.net>\r\n"
        + b"BDAT %d LAST\r\n" % len(chunk)
        + chunk
        + b"QUIT\r\n"
    )
    out["batch2"] = c.codes(5)
    out["after_quit"] = c.rest().decode()
    return out


def starttls_injection(host, port):
    c = Raw(host, port)
    c.reply()
    c.send(b"EHLO inject.example\r\n")
    c.reply()
    # Commands pipelined after STARTTLS in plaintext must never run after the handshake.
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
    out = {"starttls": c.reply()[0]}
    tls = unverified().wrap_socket(c.sock, server_hostname="localhost")
    c.sock, c.buf = tls, b""
    c.send(b"RCPT TO:<victim@example.net>\r\n")
    out["rcpt_after_tls"] = c.reply()[0]
    c.send(b"QUIT\r\n")
    out["quit"] = c.reply()[0]
    return out


def verify_cert(host, port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    with smtplib.SMTP(host, int(port), timeout=TIMEOUT) as s:
        s.starttls(context=ctx)
        der = s.sock.getpeercert(binary_form=True)
        s.ehlo()
        s.sendmail("py@example.org", ["v@example.net"], b"Subject: verified\r\n\r\nok\r\n")
    return {"verified": True, "peer_der_len": len(der)}


def implicit_tls(host, port):
    with smtplib.SMTP_SSL(host, int(port), local_hostname="py.example", timeout=TIMEOUT, context=unverified()) as s:
        s.sendmail("py@example.org", ["smtps@example.net"], b"Subject: smtps\r\n\r\nimplicit\r\n")
        return {"version": s.sock.version()}


def proxy_implicit_tls(host, port):
    """A PROXY v1 header and the TLS ClientHello in one write, then SMTP over TLS."""
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = unverified().wrap_bio(incoming, outgoing, server_hostname="localhost")

    def pump(step):
        while True:
            try:
                result = step()
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                return result
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError("closed during TLS")
                incoming.write(chunk)

    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    sock.sendall(b"PROXY TCP4 192.0.2.7 198.51.100.9 5555 465\r\n" + outgoing.read())
    pump(tls.do_handshake)
    out = {"version": tls.version()}
    buf = b""

    def reply():
        nonlocal buf
        while True:
            lines = buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) < 4 or line[3:4] != b"-":
                    text = b"\r\n".join(lines[: i + 1]) + b"\r\n"
                    buf = buf[len(text):]
                    return text.decode()
            buf += pump(lambda: tls.read(65536))

    out["greeting"] = reply()
    pump(lambda: tls.write(b"EHLO proxied.example\r\n"))
    out["ehlo"] = reply()
    pump(lambda: tls.write(b"QUIT\r\n"))
    out["quit"] = reply()
    return out


SCENARIOS = {
    "send_plain": send_plain,
    "starttls_auth": starttls_auth,
    "pipelined": pipelined,
    "starttls_injection": starttls_injection,
    "verify_cert": verify_cert,
    "implicit_tls": implicit_tls,
    "proxy_implicit_tls": proxy_implicit_tls,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]](*sys.argv[2:])))
