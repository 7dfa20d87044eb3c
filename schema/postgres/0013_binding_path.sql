-- The proxies between a subscriber and us (RFC 3327 Path), kept with each binding: a call to
-- the subscriber goes out with them as its Route, so it reaches the phone through the edge
-- proxy it registered through, from whichever node the call entered. One URI per line,
-- nearest proxy first; empty when the phone registered with us directly.
ALTER TABLE sip_bindings ADD COLUMN path TEXT NOT NULL DEFAULT '';
