# A whole session: login, listing, retrieval with dot-stuffing, deletion, update.
# Store headers (Status, X-UID, X-Keywords, X-IMAPbase) are never shown.
S: +OK POP3 server ready
C: USER alice
S: +OK
C: PASS alice
S: +OK alice has 3 messages
C: STAT
S: +OK 3 562
C: LIST
S: +OK scan listing follows
S: 1 166
S: 2 210
S: 3 186
S: .
C: UIDL
S: +OK unique-id listing follows
S: 1 00000001{UIDVALIDITY}
S: 2 00000002{UIDVALIDITY}
S: 3 00000003{UIDVALIDITY}
S: .
C: TOP 3 1
S: +OK top of message follows
S: Return-Path: <carol@example.org>
S: Delivered-To: alice@localhost
S: From: carol@example.org
S: To: alice@localhost
S: Subject: three
S: Message-ID: <three@example.org>
S:
S: line 1
S: .
C: RETR 2
S: +OK 210 octets
S: Return-Path: <carol@example.org>
S: Delivered-To: alice@localhost
S: From: carol@example.org
S: To: alice@localhost
S: Subject: two
S: Message-ID: <two@example.org>
S:
S: ..leading dot
S: ...two dots
S: ..
S: >>From quoted
S: end
S: .
C: DELE 1
S: +OK message 1 deleted
C: STAT
S: +OK 2 396
C: LIST 1
S: -ERR message is deleted
C: UIDL 3
S: +OK 3 00000003{UIDVALIDITY}
C: QUIT
S: +OK bye (1 message deleted)
