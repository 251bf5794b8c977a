"""Python's smtplib.LMTP against mailsink's LMTP listener.

Usage: lmtp_client.py HOST PORT; prints one JSON object on stdout. smtplib's sendmail reads
a single reply after the data, so the per-recipient replies of LMTP (RFC 2033 section 4.2)
are read with getreply(), one per accepted recipient, as an LMTP client must.
Every socket has a timeout, so the script can never hang.
"""

import json
import smtplib
import sys

TIMEOUT = 15


def main(host, port):
    out = {}
    body = b"From: py@example.org\r\nSubject: smtplib lmtp\r\n\r\n.dot line\r\nhello\r\n"
    with smtplib.LMTP(host, int(port), local_hostname="py.example", timeout=TIMEOUT) as s:
        code, _ = s.ehlo()  # LHLO, for smtplib.LMTP
        out["lhlo"] = code
        out["features"] = sorted(s.esmtp_features)
        s.mail("py@example.org")
        recipients = ["ok@example.net", "no@example.net", "also@example.net"]
        out["rcpt"] = [s.rcpt(r)[0] for r in recipients]
        code, text = s.data(body)
        replies = [[code, text.decode()]]
        for _ in recipients[1:]:
            code, text = s.getreply()
            replies.append([code, text.decode()])
        out["data"] = replies
        # One recipient: sendmail's single reply is the whole answer.
        out["single"] = s.sendmail("py@example.org", ["solo@example.net"], body)
        out["noop"] = s.noop()[0]
    out["body"] = body.decode()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
