# STORE in its forms, SEARCH, EXPUNGE and the untagged replies they cause;
# a new keyword is announced in * FLAGS before a FETCH shows it.
C: b1 SELECT INBOX
C: b2 STORE 1 +FLAGS (\Flagged $Todo)
C: b3 STORE 2 FLAGS.SILENT (\Deleted)
C: b4 UID STORE 1 -FLAGS (\Flagged)
C: b5 SEARCH OR FROM bob KEYWORD $Todo
C: b6 UID SEARCH DELETED
C: b7 SEARCH CHARSET UTF-8 BODY noon
C: b8 EXPUNGE
C: b9 FETCH 1:* (UID FLAGS)
C: b10 LOGOUT
S: * PREAUTH [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID IDLE UIDPLUS NAMESPACE UNSELECT MOVE CHILDREN] localhost ready
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Flags permitted.
S: * 2 EXISTS
S: * 2 RECENT
S: * OK [UNSEEN 1] First unseen.
S: * OK [UIDVALIDITY <ANY>] UIDs valid
S: * OK [UIDNEXT 3] Predicted next UID
S: b1 OK [READ-WRITE] SELECT completed
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Todo)
S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Todo \*)] Flags permitted.
S: * 1 FETCH (FLAGS (\Flagged $Todo \Recent))
S: b2 OK STORE completed
S: b3 OK STORE completed
S: * 1 FETCH (UID 1 FLAGS ($Todo \Recent))
S: b4 OK UID STORE completed
S: * SEARCH 1 2
S: b5 OK SEARCH completed
S: * SEARCH 2
S: b6 OK UID SEARCH completed
S: * SEARCH 1
S: b7 OK SEARCH completed
S: * 2 EXPUNGE
S: b8 OK EXPUNGE completed
S: * 1 FETCH (UID 1 FLAGS ($Todo \Recent))
S: b9 OK FETCH completed
S: * BYE logging out
S: b10 OK LOGOUT completed
