# Message structure: a message that is one message/rfc822 (RFC 3501 6.4.5),
# the CRLF before a boundary after an epilogue (RFC 2046 5.1.1), empty
# groups with a comment in ENVELOPE, SEARCH FROM by the parsed address.
C: s1 EXAMINE INBOX
C: s2 FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.HEADER] BODY.PEEK[1.TEXT] BODY.PEEK[1.1])
C: s3 FETCH 2 (BODYSTRUCTURE BODY.PEEK[2])
C: s4 FETCH 3 (ENVELOPE)
C: s5 SEARCH FROM user-from@domain.org
C: s6 SEARCH FROM comment
C: s7 SEARCH CC group2
C: s8 LOGOUT
S: * PREAUTH [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID IDLE UIDPLUS NAMESPACE UNSELECT MOVE CHILDREN] localhost ready
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
S: * OK [PERMANENTFLAGS ()] Flags permitted.
S: * 4 EXISTS
S: * 4 RECENT
S: * OK [UNSEEN 1] First unseen.
S: * OK [UIDVALIDITY <ANY>] UIDs valid
S: * OK [UIDNEXT 5] Predicted next UID
S: s1 OK [READ-ONLY] EXAMINE completed
S: * 1 FETCH (BODY[1] {74}
S: From: Carol <carol@example.org>
S: Subject: the original
S:
S: Original text.
S:  BODY[1.HEADER] {58}
S: From: Carol <carol@example.org>
S: Subject: the original
S:
S:  BODY[1.TEXT] {16}
S: Original text.
S:  BODY[1.1] {16}
S: Original text.
S: )
S: s2 OK FETCH completed
S: * 2 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL) "mixed" ("boundary" "outer") NIL NIL NIL) BODY[2] {83}
S: --inner
S: Content-Type: text/plain
S:
S: plain version
S: --inner--
S: the inner epilogue
S: )
S: s3 OK FETCH completed
S: * 3 FETCH (ENVELOPE (NIL "empty groups" (("Dave" NIL "dave" "example.org")) (("Dave" NIL "dave" "example.org")) (("Dave" NIL "dave" "example.org")) ((NIL NIL "alice" "example.org")) ((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) NIL NIL NIL))
S: s4 OK FETCH completed
S: * SEARCH 4
S: s5 OK SEARCH completed
S: * SEARCH
S: s6 OK SEARCH completed
S: * SEARCH 3
S: s7 OK SEARCH completed
S: * BYE logging out
S: s8 OK LOGOUT completed
