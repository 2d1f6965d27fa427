"""mail(1): the shell user's mail command, one module per concern.

main (argv) -> session (the run's state) -> commands/ (the `?` prompt's
table) and tilde (the composer), over folder (the open mailbox and quit),
msglist (message-list grammar), compose (building and sending), mime_view
(showing messages), summary (header lines) and rc (start-up files).
"""
