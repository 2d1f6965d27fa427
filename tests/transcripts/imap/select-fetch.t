# SELECT, then the fetch forms a mail reader uses to show a message list and a message.
C: a1 SELECT INBOX
C: a2 FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)
C: a3 FETCH 2 (BODYSTRUCTURE)
C: a4 UID FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME])
C: a5 FETCH 1 BODY[TEXT]
C: a6 FETCH 1 (FLAGS)
C: a7 LOGOUT
S: * PREAUTH [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID IDLE UIDPLUS NAMESPACE UNSELECT MOVE CHILDREN] localhost ready
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Flags permitted.
S: * 2 EXISTS
S: * 2 RECENT
S: * OK [UNSEEN 1] First unseen.
S: * OK [UIDVALIDITY <ANY>] UIDs valid
S: * OK [UIDNEXT 3] Predicted next UID
S: a1 OK [READ-WRITE] SELECT completed
S: * 1 FETCH (UID 1 FLAGS (\Recent) RFC822.SIZE 217 ENVELOPE ("Mon, 2 Jan 2023 10:00:00 +0000" "lunch" (("Alice" NIL "alice" "example.org")) (("Alice" NIL "alice" "example.org")) (("Alice" NIL "alice" "example.org")) ((NIL NIL "bob" "example.org")) NIL NIL NIL "<lunch@example.org>"))
S: * 2 FETCH (UID 2 FLAGS (\Recent) RFC822.SIZE 386 ENVELOPE ("Mon, 2 Jan 2023 10:05:00 +0000" "Re: lunch" (("Bob" NIL "bob" "example.org")) (("Bob" NIL "bob" "example.org")) (("Bob" NIL "bob" "example.org")) ((NIL NIL "alice" "example.org")) NIL NIL "<lunch@example.org>" NIL))
S: a2 OK FETCH completed
S: * 2 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0 NIL NIL NIL NIL)("text" "calendar" ("method" "REQUEST" "charset" "us-ascii") NIL NIL "7bit" 30 1 NIL NIL NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL))
S: a3 OK FETCH completed
S: * 2 FETCH (UID 2 BODY[1] {4}
S: Yes. BODY[2.MIME] {47}
S: Content-Type: text/calendar; method=REQUEST
S:
S: )
S: a4 OK UID FETCH completed
S: * 1 FETCH (BODY[TEXT] {26}
S: Noon at the usual place?
S:  FLAGS (\Seen \Recent))
S: a5 OK FETCH completed
S: * 1 FETCH (FLAGS (\Seen \Recent))
S: a6 OK FETCH completed
S: * BYE logging out
S: a7 OK LOGOUT completed
