//! What a destination does with calls other than `identify`: the delivery side's own spec of
//! the `[[destinations.track]]` / `[[destinations.page]]` rules and the kind switches
//! (`group_accounts`, `company_accounts`, `audience_lists`), built from the configuration in one
//! place (`freshgate::config::DestinationConfig::kinds`, kept on `ResolvedDestination::kinds`) so
//! the pipeline never reads config types.
//!
//! Rules are matched in order, the first match wins; a call no rule matches is skipped with a
//! reason a user understands ([`NoRuleMatches`]).

use std::fmt;

use crate::template::TitleTemplate;

/// Which call a rule list applies to; names the rule kind in skip reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `track`, matched on `event`.
    Track,
    /// `page` and `screen`, matched on `name`.
    Page,
}

impl RuleKind {
    /// `track` / `page`, as in the configuration tables.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Track => "track",
            Self::Page => "page",
        }
    }
}

/// Which event names a rule takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventMatch {
    /// `"*"`: every call of the kind, also one without a name.
    Any,
    /// Exactly this name (case-sensitive, as Segment event names are).
    Exact(String),
}

impl EventMatch {
    /// `"*"` is [`EventMatch::Any`], anything else an exact name.
    #[must_use]
    pub fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            Self::Any
        } else {
            Self::Exact(pattern.to_owned())
        }
    }

    /// Whether a call with that name (if any) is taken.
    #[must_use]
    pub fn matches(&self, name: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(want) => name == Some(want.as_str()),
        }
    }
}

/// One rule: what a matching track (or page/screen) becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRule {
    /// Which names it takes.
    pub matches: EventMatch,
    /// A Sales activity type name (`GET /selector/sales_activity_types`, matched exactly).
    pub activity_type: Option<String>,
    /// A lifecycle stage name (`GET /selector/lifecycle_stages`, matched exactly).
    pub lifecycle_stage: Option<String>,
    /// The activity title; `None`: the event (or page) name.
    pub title: Option<TitleTemplate>,
}

/// Why a rule cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Neither an activity type nor a lifecycle stage: the rule would do nothing.
    #[error("set activity_type, lifecycle_stage or both (a rule with neither does nothing)")]
    NothingToDo,
    /// An empty event pattern (use "*" for any).
    #[error("must not be empty (an exact event name, or \"*\" for any)")]
    EmptyPattern,
    /// A blank type or stage name.
    #[error("{0} must not be blank when set")]
    BlankName(&'static str),
}

impl TrackRule {
    /// A rule, checked: a pattern, and at least one of activity type / lifecycle stage.
    ///
    /// # Errors
    /// [`RuleError`] naming what is wrong.
    pub fn new(
        pattern: &str,
        activity_type: Option<String>,
        lifecycle_stage: Option<String>,
        title: Option<TitleTemplate>,
    ) -> Result<Self, RuleError> {
        if pattern.trim().is_empty() {
            return Err(RuleError::EmptyPattern);
        }
        if activity_type
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(RuleError::BlankName("activity_type"));
        }
        if lifecycle_stage
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(RuleError::BlankName("lifecycle_stage"));
        }
        if activity_type.is_none() && lifecycle_stage.is_none() {
            return Err(RuleError::NothingToDo);
        }
        Ok(Self {
            matches: EventMatch::parse(pattern),
            activity_type,
            lifecycle_stage,
            title,
        })
    }
}

/// A call that no rule takes: the skip reason recorded for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRuleMatches {
    /// Which rule list was searched.
    pub kind: RuleKind,
    /// The call's name, if it had one.
    pub name: Option<String>,
}

impl fmt::Display for NoRuleMatches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "no {} rule matches '{name}'", self.kind.as_str()),
            None => write!(
                f,
                "no {} rule matches a {} without a name",
                self.kind.as_str(),
                self.kind.as_str()
            ),
        }
    }
}

impl std::error::Error for NoRuleMatches {}

/// The ordered rules of one kind of call.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRules {
    kind: RuleKind,
    rules: Vec<TrackRule>,
}

impl TrackRules {
    /// The rules of `kind`, in configuration order.
    #[must_use]
    pub fn new(kind: RuleKind, rules: Vec<TrackRule>) -> Self {
        Self { kind, rules }
    }

    /// No rules of `kind`: every such call stays not handled.
    #[must_use]
    pub fn none(kind: RuleKind) -> Self {
        Self::new(kind, Vec::new())
    }

    /// Whether there is no rule at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in order.
    #[must_use]
    pub fn rules(&self) -> &[TrackRule] {
        &self.rules
    }

    /// The first rule taking `name`.
    ///
    /// # Errors
    /// [`NoRuleMatches`], whose text is the skip reason.
    pub fn find(&self, name: Option<&str>) -> Result<&TrackRule, NoRuleMatches> {
        self.rules
            .iter()
            .find(|r| r.matches.matches(name))
            .ok_or_else(|| NoRuleMatches {
                kind: self.kind,
                name: name.map(str::to_owned),
            })
    }

    /// Every activity type name the rules use, once each, in first-use order (what
    /// `destinations test` resolves against the account).
    #[must_use]
    pub fn activity_types(&self) -> Vec<&str> {
        unique(self.rules.iter().filter_map(|r| r.activity_type.as_deref()))
    }

    /// Every lifecycle stage name the rules use, once each, in first-use order.
    #[must_use]
    pub fn lifecycle_stages(&self) -> Vec<&str> {
        unique(
            self.rules
                .iter()
                .filter_map(|r| r.lifecycle_stage.as_deref()),
        )
    }
}

fn unique<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Default of [`DestinationKinds::identify_wait_secs`]: one hour.
pub const DEFAULT_IDENTIFY_WAIT_SECS: u64 = 3600;

/// What one destination delivers besides identify. [`DestinationKinds::identify_only`] is
/// today's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationKinds {
    /// group → sales account, contact associated.
    pub group_accounts: bool,
    /// identify `traits.company` → sales account, contact associated.
    pub company_accounts: bool,
    /// Engage audience membership → marketing list named after the audience key.
    pub audience_lists: bool,
    /// Owner of created activities (an email of `/selector/owners`); `None`: the account's
    /// first active owner.
    pub owner_email: Option<String>,
    /// How long a track (or page) of a user with no valid identify waits for one before it is
    /// skipped with a reason, seconds.
    pub identify_wait_secs: u64,
    /// track → activity / lifecycle stage.
    pub track: TrackRules,
    /// page and screen → activity / lifecycle stage.
    pub page: TrackRules,
}

impl Default for DestinationKinds {
    fn default() -> Self {
        Self::identify_only()
    }
}

impl DestinationKinds {
    /// Identify only: what a destination without any of the keys does.
    #[must_use]
    pub fn identify_only() -> Self {
        Self {
            group_accounts: false,
            company_accounts: false,
            audience_lists: false,
            owner_email: None,
            identify_wait_secs: DEFAULT_IDENTIFY_WAIT_SECS,
            track: TrackRules::none(RuleKind::Track),
            page: TrackRules::none(RuleKind::Page),
        }
    }

    /// Whether only identify is delivered (no kind switched on, no rule).
    #[must_use]
    pub fn is_identify_only(&self) -> bool {
        !self.group_accounts
            && !self.company_accounts
            && !self.audience_lists
            && self.track.is_empty()
            && self.page.is_empty()
    }

    /// The rules that apply to a call of that type (`page` and `screen` share them), if any.
    #[must_use]
    pub fn rules_for(&self, event_type: crate::segment::EventType) -> Option<&TrackRules> {
        use crate::segment::EventType;
        match event_type {
            EventType::Track => Some(&self.track),
            EventType::Page | EventType::Screen => Some(&self.page),
            _ => None,
        }
    }

    /// Every activity type name used by any rule, once each.
    #[must_use]
    pub fn activity_types(&self) -> Vec<&str> {
        unique(
            self.track
                .activity_types()
                .into_iter()
                .chain(self.page.activity_types()),
        )
    }

    /// Every lifecycle stage name used by any rule, once each.
    #[must_use]
    pub fn lifecycle_stages(&self) -> Vec<&str> {
        unique(
            self.track
                .lifecycle_stages()
                .into_iter()
                .chain(self.page.lifecycle_stages()),
        )
    }
}

/// A type or stage name the rules use that the account does not have: reported by
/// `destinations test`, and the dead-letter reason of an event whose rule names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownName {
    /// Not in `GET /selector/sales_activity_types`.
    ActivityType(String),
    /// Not in `GET /selector/lifecycle_stages`.
    LifecycleStage(String),
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ActivityType(n) => write!(
                f,
                "sales activity type '{n}' does not exist in the account (names match exactly, case included)"
            ),
            Self::LifecycleStage(n) => write!(
                f,
                "lifecycle stage '{n}' does not exist in the account (names match exactly, case included)"
            ),
        }
    }
}

impl std::error::Error for UnknownName {}

/// The account's names → ids of activity types and lifecycle stages, as the selectors list them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameIds {
    /// Sales activity type name → id.
    pub activity_types: std::collections::BTreeMap<String, i64>,
    /// Lifecycle stage name → id.
    pub lifecycle_stages: std::collections::BTreeMap<String, i64>,
}

impl NameIds {
    /// The id of an activity type name (exact match, as RudderStack matches).
    ///
    /// # Errors
    /// [`UnknownName::ActivityType`].
    pub fn activity_type(&self, name: &str) -> Result<i64, UnknownName> {
        self.activity_types
            .get(name)
            .copied()
            .ok_or_else(|| UnknownName::ActivityType(name.to_owned()))
    }

    /// The id of a lifecycle stage name (exact match).
    ///
    /// # Errors
    /// [`UnknownName::LifecycleStage`].
    pub fn lifecycle_stage(&self, name: &str) -> Result<i64, UnknownName> {
        self.lifecycle_stages
            .get(name)
            .copied()
            .ok_or_else(|| UnknownName::LifecycleStage(name.to_owned()))
    }

    /// Every name the rules use that the account lacks, types first.
    #[must_use]
    pub fn unknown_in(&self, kinds: &DestinationKinds) -> Vec<UnknownName> {
        let types = kinds
            .activity_types()
            .into_iter()
            .filter_map(|n| self.activity_type(n).err());
        let stages = kinds
            .lifecycle_stages()
            .into_iter()
            .filter_map(|n| self.lifecycle_stage(n).err());
        types.chain(stages).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::segment::EventType;
    use proptest::prelude::*;

    fn rule(pattern: &str, activity: &str) -> TrackRule {
        TrackRule::new(pattern, Some(activity.into()), None, None).unwrap()
    }

    #[test]
    fn first_match_wins_and_star_takes_the_rest() {
        let rules = TrackRules::new(
            RuleKind::Track,
            vec![
                rule("Order Completed", "Purchase"),
                rule("*", "Other"),
                rule("Order Completed", "Never"),
            ],
        );
        assert_eq!(
            rules
                .find(Some("Order Completed"))
                .unwrap()
                .activity_type
                .as_deref(),
            Some("Purchase")
        );
        assert_eq!(
            rules
                .find(Some("Signed Up"))
                .unwrap()
                .activity_type
                .as_deref(),
            Some("Other")
        );
        assert_eq!(
            rules.find(None).unwrap().activity_type.as_deref(),
            Some("Other")
        );
    }

    #[test]
    fn exact_names_are_case_sensitive() {
        let rules = TrackRules::new(RuleKind::Track, vec![rule("Order Completed", "Purchase")]);
        assert!(rules.find(Some("order completed")).is_err());
    }

    #[test]
    fn no_match_says_which_rules_and_which_name() {
        let rules = TrackRules::new(RuleKind::Track, vec![rule("Order Completed", "Purchase")]);
        assert_eq!(
            rules.find(Some("Signed Up")).unwrap_err().to_string(),
            "no track rule matches 'Signed Up'"
        );
        let pages = TrackRules::none(RuleKind::Page);
        assert_eq!(
            pages.find(None).unwrap_err().to_string(),
            "no page rule matches a page without a name"
        );
    }

    #[test]
    fn a_rule_must_do_something() {
        assert_eq!(
            TrackRule::new("x", None, None, None).unwrap_err(),
            RuleError::NothingToDo
        );
        assert_eq!(
            TrackRule::new(" ", Some("Call".into()), None, None).unwrap_err(),
            RuleError::EmptyPattern
        );
        assert_eq!(
            TrackRule::new("x", Some(" ".into()), None, None).unwrap_err(),
            RuleError::BlankName("activity_type")
        );
        assert!(TrackRule::new("x", None, Some("Customer".into()), None).is_ok());
    }

    #[test]
    fn identify_only_is_the_default_and_screen_uses_page_rules() {
        let kinds = DestinationKinds::default();
        assert!(kinds.is_identify_only());
        assert_eq!(kinds.identify_wait_secs, 3600);
        let kinds = DestinationKinds {
            page: TrackRules::new(RuleKind::Page, vec![rule("Pricing", "Website visit")]),
            track: TrackRules::new(
                RuleKind::Track,
                vec![
                    rule("A", "Purchase"),
                    TrackRule::new("B", Some("Purchase".into()), Some("Customer".into()), None)
                        .unwrap(),
                ],
            ),
            ..DestinationKinds::identify_only()
        };
        assert!(!kinds.is_identify_only());
        assert!(
            kinds
                .rules_for(EventType::Screen)
                .unwrap()
                .find(Some("Pricing"))
                .is_ok()
        );
        assert!(kinds.rules_for(EventType::Group).is_none());
        assert_eq!(kinds.activity_types(), vec!["Purchase", "Website visit"]);
        assert_eq!(kinds.lifecycle_stages(), vec!["Customer"]);
    }

    #[test]
    fn names_resolve_exactly_and_unknown_ones_are_listed() {
        let kinds = DestinationKinds {
            track: TrackRules::new(
                RuleKind::Track,
                vec![
                    TrackRule::new("A", Some("Purchase".into()), Some("Customer".into()), None)
                        .unwrap(),
                    TrackRule::new("B", Some("purchase".into()), Some("VIP".into()), None).unwrap(),
                ],
            ),
            ..DestinationKinds::identify_only()
        };
        let ids = NameIds {
            activity_types: [("Purchase".to_owned(), 1)].into_iter().collect(),
            lifecycle_stages: [("Customer".to_owned(), 2)].into_iter().collect(),
        };
        assert_eq!(ids.activity_type("Purchase"), Ok(1));
        assert_eq!(ids.lifecycle_stage("Customer"), Ok(2));
        let unknown = ids.unknown_in(&kinds);
        assert_eq!(
            unknown,
            vec![
                UnknownName::ActivityType("purchase".into()),
                UnknownName::LifecycleStage("VIP".into())
            ]
        );
        assert_eq!(
            unknown[1].to_string(),
            "lifecycle stage 'VIP' does not exist in the account (names match exactly, case included)"
        );
    }

    proptest! {
        // The model: the index of the first rule whose pattern is "*" or equals the name.
        #[test]
        fn find_is_the_first_matching_rule(
            patterns in proptest::collection::vec(prop_oneof![Just("*".to_owned()), "[ab]{1,2}"], 0..6),
            name in proptest::option::of("[ab]{1,2}"),
        ) {
            let rules = TrackRules::new(
                RuleKind::Track,
                patterns.iter().enumerate().map(|(i, p)| rule(p, &i.to_string())).collect(),
            );
            let model = patterns.iter().position(|p| p == "*" || Some(p) == name.as_ref());
            let found = rules.find(name.as_deref()).ok().and_then(|r| r.activity_type.clone());
            prop_assert_eq!(found, model.map(|i| i.to_string()));
        }
    }
}
