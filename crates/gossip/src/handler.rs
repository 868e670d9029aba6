//! Event filters (`member-join`, `user:deploy`, `query:NAME`, `*`, comma
//! lists) shared by `-event-handler` and the RPC `stream` command.

use crate::model::Event;

/// One element of a filter list, as Serf parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// `*`, `member-join`, ..., `user` or `query`.
    pub event: String,
    /// For `user:NAME` / `query:NAME`: the name; empty means any.
    pub name: String,
}

impl EventFilter {
    /// Parses a comma list; an empty string means `*`. Fails naming the
    /// first unknown event type.
    pub fn parse_list(s: &str) -> Result<Vec<EventFilter>, String> {
        let s = if s.is_empty() { "*" } else { s };
        s.split(',')
            .map(|item| {
                let (event, name) = if let Some(n) = item.strip_prefix("user:") {
                    ("user", n)
                } else if let Some(n) = item.strip_prefix("query:") {
                    ("query", n)
                } else {
                    (item, "")
                };
                let f = EventFilter {
                    event: event.to_string(),
                    name: name.to_string(),
                };
                if f.valid() {
                    Ok(f)
                } else {
                    Err(format!("invalid event filter '{item}'"))
                }
            })
            .collect()
    }

    fn valid(&self) -> bool {
        matches!(
            self.event.as_str(),
            "*" | "member-join"
                | "member-leave"
                | "member-failed"
                | "member-update"
                | "member-reap"
                | "user"
                | "query"
        )
    }

    pub fn matches(&self, e: &Event) -> bool {
        if self.event == "*" {
            return true;
        }
        match e {
            Event::Member { kind, .. } => self.event == kind.as_str(),
            Event::User { name, .. } => {
                self.event == "user" && (self.name.is_empty() || &self.name == name)
            }
            Event::Query(q) => {
                self.event == "query" && (self.name.is_empty() || self.name == q.name)
            }
        }
    }
}

/// Does any filter of the list accept `e`?
pub fn any_matches(filters: &[EventFilter], e: &Event) -> bool {
    filters.iter().any(|f| f.matches(e))
}
