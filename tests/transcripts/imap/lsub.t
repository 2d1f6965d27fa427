# LSUB with % (RFC 3501 6.3.9): a parent of subscribed names that is not
# subscribed itself is listed \Noselect; with * or without a trailing %
# only the subscribed names are.
C: l1 CREATE imaptest/test2/test
C: l2 CREATE imaptest/test3/test3
C: l3 CREATE imaptest/sub1
C: l4 SUBSCRIBE imaptest/test2/test
C: l5 SUBSCRIBE imaptest/test3/test3
C: l6 SUBSCRIBE imaptest/sub1
C: l7 SUBSCRIBE imaptest/test3
C: l8 LSUB "" imaptest/%
C: l9 LSUB "" %
C: l10 LSUB imaptest/ t%
C: l11 LSUB "" imaptest/*
C: l12 LSUB "" %/test2
C: l13 LOGOUT
S: * PREAUTH [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID IDLE UIDPLUS NAMESPACE UNSELECT MOVE CHILDREN] localhost ready
S: l1 OK CREATE completed
S: l2 OK CREATE completed
S: l3 OK CREATE completed
S: l4 OK SUBSCRIBE completed
S: l5 OK SUBSCRIBE completed
S: l6 OK SUBSCRIBE completed
S: l7 OK SUBSCRIBE completed
S: * LSUB (\Noselect) "/" imaptest/test2
S: * LSUB () "/" imaptest/test3
S: * LSUB () "/" imaptest/sub1
S: l8 OK LSUB completed
S: * LSUB (\Noselect) "/" imaptest
S: l9 OK LSUB completed
S: * LSUB (\Noselect) "/" imaptest/test2
S: * LSUB () "/" imaptest/test3
S: l10 OK LSUB completed
S: * LSUB () "/" imaptest/test2/test
S: * LSUB () "/" imaptest/test3
S: * LSUB () "/" imaptest/test3/test3
S: * LSUB () "/" imaptest/sub1
S: l11 OK LSUB completed
S: l12 OK LSUB completed
S: * BYE logging out
S: l13 OK LOGOUT completed
