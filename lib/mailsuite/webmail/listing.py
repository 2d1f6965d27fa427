"""One page of a mailbox, asking the server for that page only.

Date order (the default, newest first) is arrival order, which is the
order of sequence numbers: page P is the range N-50P+1..N-50(P-1), one
FETCH of 50 headers whatever the mailbox's size.  Sender, subject and size
orders use the server's SORT (RFC 5256) when it has it.  Without SORT
(our imapd has none) the only way to know the 50 first by sender is to
look at every sender once: one FETCH of that header field for the whole
mailbox (about 4 s for 100,000 messages on our imapd), kept in memory
and reused until the mailbox changes (UIDVALIDITY, EXISTS or an
expunge).  A search is one UID SEARCH, its result cached the same way.
"""

import collections
import threading

SORTS = {"date": "ARRIVAL", "from": "FROM", "subject": "SUBJECT", "size": "SIZE"}
SEARCH_FIELDS = {"text": "TEXT", "from": "FROM", "subject": "SUBJECT", "to": "TO"}


class OrderCache:
    """The last few UID orders computed, keyed on the mailbox's state."""

    def __init__(self, size=16):
        self.size = size
        self.entries = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, key, compute):
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        value = compute()
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return value


def page(client, selected, *, user, sort, descending, number, size, query, field, cache):
    """(summaries of page NUMBER, total messages listed)."""
    if sort not in SORTS:
        sort = "date"
    if not query and sort == "date":
        total = selected.exists
        if descending:
            last = total - (number - 1) * size
            first = last - size + 1
        else:
            first = (number - 1) * size + 1
            last = min(total, first + size - 1)
        items = client.page_by_sequence(max(first, 1), min(last, total))
        return (items if descending else items[::-1]), total
    key = (user, selected.name, selected.uidvalidity, selected.exists, selected.generation, sort, query, field)
    uids = cache.get(key, lambda: _ordered(client, sort, query, field))
    if descending:
        uids = uids[::-1]
    chunk = uids[(number - 1) * size:number * size]
    return client.summaries(chunk), len(uids)


def _ordered(client, sort, query, field):
    """Every UID listed, in ascending SORT order."""
    criteria = (SEARCH_FIELDS.get(field, "TEXT"), query) if query else ()
    if sort == "date":
        return client.search(*criteria) if criteria else client.search("ALL")
    if "SORT" in client.capabilities:
        return client.sort(SORTS[sort], *criteria)
    keys = client.sort_keys(SORTS[sort])
    uids = client.search(*criteria) if criteria else list(keys)
    return sorted(uids, key=lambda uid: (keys.get(uid, ""), uid))
