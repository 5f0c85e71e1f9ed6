//! The rule trace in words, for `switchyard policy explain`: a [`Decision`] as sentences a
//! customer-service representative can read aloud (the verdict, then every rule it names).

use super::{Decision, Verdict};
use crate::domain::{Order, Timestamp};

impl Decision {
    /// The decision as sentences a customer-service representative can read aloud.
    pub fn explain(&self, order: &Order, at: Timestamp) -> String {
        let mut out = format!(
            "Order {} ({} of meter {}) at {at}, under rule pack {}:\n",
            order.order_id,
            order.kind.as_str(),
            order.meter_id,
            self.pack
        );
        let verdict = match &self.verdict {
            Verdict::Execute => "The order may be carried out now.".to_string(),
            Verdict::Defer { until: Some(u) } => format!("The order must wait. With what is known now, the earliest allowed time is {u}."),
            Verdict::Defer { until: None } => "The order must wait until the situation below changes.".to_string(),
            Verdict::AwaitApproval => "The order needs an explicit approval by an authorised person before it can be carried out.".to_string(),
            Verdict::Reject => "The order may not be carried out.".to_string(),
        };
        out.push_str(&format!("  Decision: {verdict}\n"));
        for r in &self.rules {
            out.push_str(&format!("  Rule {}: {}\n", r.rule, r.detail));
        }
        out
    }
}
