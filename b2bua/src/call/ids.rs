//! Where a call's tags, branches, Call-IDs and conference ids come from: random in service,
//! counted in tests, so that a whole call's messages can be asserted exactly.

/// A source of the identifiers a call puts in its messages and records.
pub trait Ids {
    /// A From or To tag.
    fn tag(&mut self) -> String;
    /// A Via branch, with RFC 3261's magic cookie.
    fn branch(&mut self) -> String;
    /// A Call-ID for a dialog we start, at our `host`.
    fn call_id(&mut self, host: &str) -> String;
    /// A session or conference id (a UUID in service).
    fn uuid(&mut self) -> String;
}

/// The identifiers of a running service: random, never repeated in practice.
#[derive(Debug, Default)]
pub struct RandomIds;

impl Ids for RandomIds {
    fn tag(&mut self) -> String {
        crate::sip::message::new_tag()
    }
    fn branch(&mut self) -> String {
        crate::sip::message::new_branch()
    }
    fn call_id(&mut self, host: &str) -> String {
        crate::sip::message::new_call_id(host)
    }
    fn uuid(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// Identifiers counted from one: `tag1`, `z9hG4bK2`, `call3@host`, `uuid4` — for tests.
#[derive(Debug, Default)]
pub struct CountedIds {
    next: u64,
}

impl CountedIds {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

impl Ids for CountedIds {
    fn tag(&mut self) -> String {
        format!("tag{}", self.next())
    }
    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.next())
    }
    fn call_id(&mut self, host: &str) -> String {
        format!("call{}@{host}", self.next())
    }
    fn uuid(&mut self) -> String {
        format!("uuid{}", self.next())
    }
}
