#!/usr/bin/python3
"""A real SMTP server on loopback for Tessera's mail tests (Debian's
python3-aiosmtpd). Every message it accepts is written to DIR as N.eml, with
a JSON summary N.json that the Rust tests read (subject decoded, each MIME
part's type, file name, Content-ID, size and first bytes, the text and HTML
bodies), and each attachment saved as N-FILENAME.

usage: smtp_sink.py HOST PORT DIR   (prints "ready" once it accepts mail;
runs until its standard input closes or it is killed)
"""
import email
import email.policy
import json
import os
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        text = html = None
        for part in message.walk():
            if part.is_multipart():
                parts.append({"type": part.get_content_type()})
                continue
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            entry = {
                "type": part.get_content_type(),
                "filename": filename,
                "content_id": part.get("Content-ID"),
                "disposition": part.get_content_disposition(),
                "size": len(payload),
                "head": payload[:8].decode("latin-1"),
            }
            if filename:
                path = os.path.join(self.directory, "%d-%s" % (n, os.path.basename(filename)))
                with open(path, "wb") as f:
                    f.write(payload)
                entry["saved"] = path
            if part.get_content_type() == "text/plain" and filename is None and text is None:
                text = part.get_content()
            if part.get_content_type() == "text/html" and html is None:
                html = part.get_content()
            if part.get_content_type() == "text/calendar":
                entry["text"] = payload.decode("utf-8", "replace")
            parts.append(entry)
        summary = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(message["Subject"]),
            "to": str(message["To"]),
            "from": str(message["From"]),
            "parts": parts,
            "text": text,
            "html": html,
        }
        # Written under a temporary name, then renamed: a test polling the
        # directory never reads half a file.
        for suffix, data in ((".eml", raw), (".json", json.dumps(summary).encode())):
            path = os.path.join(self.directory, "%d%s" % (n, suffix))
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.rename(path + ".tmp", path)
        return "250 OK"


def main():
    host, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    controller = Controller(Sink(directory), hostname=host, port=port)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
