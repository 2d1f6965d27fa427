# The hierarchy: CREATE, LIST with wildcards, SUBSCRIBE/LSUB, STATUS, RENAME, DELETE.
C: c1 CREATE Lists/python
C: c2 CREATE Drafts
C: c3 LIST "" *
C: c4 LIST Lists %
C: c5 SUBSCRIBE Drafts
C: c6 LSUB "" *
C: c7 STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)
C: c8 RENAME Drafts Lists/drafts
C: c9 DELETE Lists
C: c10 DELETE Lists/drafts
C: c11 LIST "" ""
C: c12 NAMESPACE
C: c13 LOGOUT
S: * PREAUTH [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID IDLE UIDPLUS NAMESPACE UNSELECT MOVE CHILDREN] localhost ready
S: c1 OK CREATE completed
S: c2 OK CREATE completed
S: * LIST (\HasNoChildren) "/" INBOX
S: * LIST (\NoInferiors) "/" Drafts
S: * LIST (\Noselect \HasChildren) "/" Lists
S: * LIST (\NoInferiors) "/" Lists/python
S: c3 OK LIST completed
S: * LIST (\NoInferiors) "/" Lists/python
S: c4 OK LIST completed
S: c5 OK SUBSCRIBE completed
S: * LSUB () "/" Drafts
S: c6 OK LSUB completed
S: * STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT 3 UNSEEN 2)
S: c7 OK STATUS completed
S: c8 OK RENAME completed
S: c9 NO [INUSE] mailbox has inferior hierarchical names
S: c10 OK DELETE completed
S: * LIST (\Noselect) "/" ""
S: c11 OK LIST completed
S: * NAMESPACE (("" "/")) NIL NIL
S: c12 OK NAMESPACE completed
S: * BYE logging out
S: c13 OK LOGOUT completed
