//! Trait key → field resolution over the account's field list, for contacts (identify traits)
//! and sales accounts (group traits, `traits.company`).
//!
//! Precedence (first level that matches wins): (1) the internal name, as written or converted
//! from camelCase; (2) Segment's reserved traits of the entity (contacts: `phone` →
//! `work_number`, `title` → `job_title`, `address.*` leaves, `name` split; accounts:
//! `industry` → `industry_type_id`, `employees` → `number_of_employees`, `website`, `phone`,
//! `address.*` leaves); (3) the field label, compared ignoring case, spaces, `_` and `-`. A key
//! that matches two fields at one level is ambiguous and not sent.

use std::collections::BTreeMap;

use crate::fields::{FieldDef, FieldType};

/// Contact field names the request builder writes itself; a trait never targets them. `emails`
/// comes from the `email` trait, `external_id` from the `userId`, `id` is read-only.
pub const BUILDER_OWNED: &[&str] = &["emails", "email", "external_id", "id"];

/// Sales account field names never targeted by a trait: `id` is read-only, `name` is the
/// unique identifier the request builder writes from the account's key.
pub const ACCOUNT_BUILDER_OWNED: &[&str] = &["id", "name"];

/// Which Freshworks entity a field list belongs to: it picks the reserved traits and the
/// fields the request builder owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Entity {
    /// `GET /settings/contacts/fields`.
    #[default]
    Contact,
    /// `GET /settings/sales_accounts/fields`.
    SalesAccount,
}

impl Entity {
    /// Stable name, as stored (`contact`, `sales_account`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::SalesAccount => "sales_account",
        }
    }

    /// The entity of a stored name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "contact" => Some(Self::Contact),
            "sales_account" => Some(Self::SalesAccount),
            _ => None,
        }
    }

    fn builder_owned(self) -> &'static [&'static str] {
        match self {
            Self::Contact => BUILDER_OWNED,
            Self::SalesAccount => ACCOUNT_BUILDER_OWNED,
        }
    }
}

/// The precedence level a key matched at (lower is stronger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Internal name, as written or from camelCase.
    InternalName = 1,
    /// A Segment reserved trait.
    Reserved = 2,
    /// The field label.
    Label = 3,
    /// Derived from another trait (`name` split into first/last).
    Derived = 4,
}

/// What a trait key resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// One field.
    Field {
        /// The field's internal name.
        name: String,
        /// The level it matched at.
        level: Level,
    },
    /// The reserved `name` trait, to be split into `first_name` / `last_name`.
    NameSplit,
    /// Several fields at the same level: not sent.
    Ambiguous(Vec<String>),
    /// No field.
    Unmapped,
}

/// The account's contact fields, indexed for resolution. Built once per field-list refresh.
#[derive(Debug, Clone, Default)]
pub struct FieldIndex {
    entity: Entity,
    fields: Vec<FieldDef>,
    by_name: BTreeMap<String, usize>,
    by_label: BTreeMap<String, Vec<usize>>,
}

impl FieldIndex {
    /// Index a contact field list. `group_field` containers and builder-owned names are left
    /// out: they are never targets.
    #[must_use]
    pub fn new(fields: &[FieldDef]) -> Self {
        Self::for_entity(Entity::Contact, fields)
    }

    /// Index the field list of `entity` (see [`FieldIndex::new`]).
    #[must_use]
    pub fn for_entity(entity: Entity, fields: &[FieldDef]) -> Self {
        let mut index = Self {
            entity,
            ..Self::default()
        };
        for def in fields {
            if def.field_type == FieldType::GroupField
                || entity.builder_owned().contains(&def.name.as_str())
                || index.by_name.contains_key(&def.name)
            {
                continue;
            }
            let i = index.fields.len();
            index.by_name.insert(def.name.clone(), i);
            let label = normalize_label(&def.label);
            if !label.is_empty() {
                index.by_label.entry(label).or_default().push(i);
            }
            index.fields.push(def.clone());
        }
        index
    }

    /// The entity whose fields these are.
    #[must_use]
    pub fn entity(&self) -> Entity {
        self.entity
    }

    /// The target field of that internal name, if it is one.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.by_name.get(name).map(|&i| &self.fields[i])
    }

    /// Every target field.
    #[must_use]
    pub fn fields(&self) -> &[FieldDef] {
        &self.fields
    }

    /// Resolve one (already flattened) trait key.
    #[must_use]
    pub fn resolve(&self, key: &str) -> Resolution {
        if self.by_name.contains_key(key) {
            return field(key, Level::InternalName);
        }
        let snake = camel_to_snake(key);
        if snake != key && self.by_name.contains_key(&snake) {
            return field(&snake, Level::InternalName);
        }
        let reserved = match self.entity {
            Entity::Contact => reserved_target(key),
            Entity::SalesAccount => reserved_account_target(key),
        };
        if let Some(target) = reserved
            && self.by_name.contains_key(target)
        {
            return field(target, Level::Reserved);
        }
        if self.entity == Entity::Contact
            && key == "name"
            && (self.by_name.contains_key("first_name") || self.by_name.contains_key("last_name"))
        {
            return Resolution::NameSplit;
        }
        match self.by_label.get(&normalize_label(key)) {
            Some(hits) if hits.len() == 1 => field(&self.fields[hits[0]].name, Level::Label),
            Some(hits) => {
                let mut names: Vec<String> =
                    hits.iter().map(|&i| self.fields[i].name.clone()).collect();
                names.sort();
                names.dedup();
                Resolution::Ambiguous(names)
            }
            None => Resolution::Unmapped,
        }
    }
}

fn field(name: &str, level: Level) -> Resolution {
    Resolution::Field {
        name: name.to_owned(),
        level,
    }
}

/// Segment reserved traits (spec/segment.md §2.4) and the Freshworks field each goes to.
/// `phone` → `work_number` as Freshworks' own Segment destination does; `address.*` are the
/// leaves of the flattened `address` object.
fn reserved_target(key: &str) -> Option<&'static str> {
    Some(match key {
        "firstName" | "first_name" | "firstname" => "first_name",
        "lastName" | "last_name" | "lastname" => "last_name",
        "phone" => "work_number",
        "title" => "job_title",
        "address.street" => "address",
        "address.city" => "city",
        "address.state" => "state",
        "address.postalCode" | "address.postal_code" => "zipcode",
        "address.country" => "country",
        _ => return None,
    })
}

/// Segment's reserved group traits (spec/segment.md §2.4; `employee_count` of Segment's
/// `company` object) and the sales account field each goes to. `name` is not here: the account
/// builder writes it.
fn reserved_account_target(key: &str) -> Option<&'static str> {
    Some(match key {
        "industry" => "industry_type_id",
        "employees" | "employee_count" => "number_of_employees",
        "website" => "website",
        "phone" => "phone",
        "address.street" => "address",
        "address.city" => "city",
        "address.state" => "state",
        "address.postalCode" | "address.postal_code" => "zipcode",
        "address.country" => "country",
        _ => return None,
    })
}

/// A label or key as compared at level 3: lower-case, without whitespace, `_` and `-`.
#[must_use]
pub fn normalize_label(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `cfAlternateNumber` → `cf_alternate_number`, `cfURLValue` → `cf_url_value`; snake_case
/// input is returned unchanged.
#[must_use]
pub fn camel_to_snake(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(char::is_lowercase),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fields::Choice;

    pub(crate) fn def(name: &str, label: &str, ty: FieldType) -> FieldDef {
        FieldDef {
            id: serde_json::json!(1),
            name: name.into(),
            label: label.into(),
            field_type: ty,
            default: !name.starts_with("cf_"),
            required: false,
            choices: Vec::<Choice>::new(),
        }
    }

    fn index() -> FieldIndex {
        FieldIndex::new(&[
            def("first_name", "First name", FieldType::Text),
            def("last_name", "Last name", FieldType::Text),
            def("work_number", "Work", FieldType::Text),
            def("mobile_number", "Mobile", FieldType::Text),
            def("job_title", "Job title", FieldType::Text),
            def("city", "City", FieldType::Text),
            def("cf_plan", "Plan", FieldType::Dropdown),
            def("cf_alternate_number", "Alternate number", FieldType::Text),
            def("cf_industry", "Industry", FieldType::Text),
            def("cf_sector", "Sector", FieldType::Text),
            def("cf_sector_2", "sector", FieldType::Text),
            def("cf_group", "Group", FieldType::GroupField),
            def("emails", "Email", FieldType::Text),
        ])
    }

    fn is_field(r: Resolution, name: &str, level: Level) {
        assert_eq!(
            r,
            Resolution::Field {
                name: name.into(),
                level
            }
        );
    }

    #[test]
    fn internal_name_as_written_and_from_camel_case() {
        let ix = index();
        is_field(ix.resolve("first_name"), "first_name", Level::InternalName);
        is_field(ix.resolve("firstName"), "first_name", Level::InternalName);
        is_field(ix.resolve("cf_plan"), "cf_plan", Level::InternalName);
        is_field(
            ix.resolve("cfAlternateNumber"),
            "cf_alternate_number",
            Level::InternalName,
        );
    }

    #[test]
    fn reserved_traits() {
        let ix = index();
        is_field(ix.resolve("phone"), "work_number", Level::Reserved);
        is_field(ix.resolve("title"), "job_title", Level::Reserved);
        is_field(ix.resolve("address.city"), "city", Level::Reserved);
        assert_eq!(ix.resolve("name"), Resolution::NameSplit);
        // Reserved targets only count when the account has the field.
        assert_eq!(ix.resolve("address.country"), Resolution::Unmapped);
    }

    #[test]
    fn label_ignoring_case_spaces_underscores_and_dashes() {
        let ix = index();
        is_field(ix.resolve("Industry"), "cf_industry", Level::Label);
        is_field(ix.resolve("industry"), "cf_industry", Level::Label);
        is_field(ix.resolve("first name"), "first_name", Level::Label);
        is_field(
            ix.resolve("Alternate-Number"),
            "cf_alternate_number",
            Level::Label,
        );
        is_field(ix.resolve("mobile"), "mobile_number", Level::Label);
    }

    #[test]
    fn two_labels_normalising_the_same_are_ambiguous() {
        assert_eq!(
            index().resolve("SECTOR"),
            Resolution::Ambiguous(vec!["cf_sector".into(), "cf_sector_2".into()])
        );
    }

    #[test]
    fn group_fields_builder_owned_and_unknown_keys_are_not_targets() {
        let ix = index();
        assert_eq!(ix.resolve("cf_group"), Resolution::Unmapped);
        assert_eq!(ix.resolve("Group"), Resolution::Unmapped);
        assert_eq!(ix.resolve("emails"), Resolution::Unmapped);
        assert_eq!(ix.resolve("createdAt"), Resolution::Unmapped);
        assert!(ix.field("cf_group").is_none());
    }

    #[test]
    fn internal_name_beats_reserved_beats_label() {
        // A custom field literally named `title` wins over the reserved `title` → job_title,
        // and a field labelled "Phone" loses to the reserved phone → work_number.
        let ix = FieldIndex::new(&[
            def("title", "Salutation", FieldType::Text),
            def("job_title", "Job title", FieldType::Text),
            def("work_number", "Work", FieldType::Text),
            def("cf_phone", "Phone", FieldType::Text),
        ]);
        is_field(ix.resolve("title"), "title", Level::InternalName);
        is_field(ix.resolve("phone"), "work_number", Level::Reserved);
    }

    #[test]
    fn account_reserved_traits_and_no_name_split() {
        let ix = FieldIndex::for_entity(
            Entity::SalesAccount,
            &[
                def("id", "Id", FieldType::Number),
                def("name", "Name", FieldType::Text),
                def("industry_type_id", "Industry type", FieldType::Dropdown),
                def(
                    "number_of_employees",
                    "Number of employees",
                    FieldType::Number,
                ),
                def("website", "Website", FieldType::Text),
                def("phone", "Phone", FieldType::Text),
                def("city", "City", FieldType::Text),
                def("cf_tier", "Tier", FieldType::Text),
            ],
        );
        assert_eq!(ix.entity(), Entity::SalesAccount);
        assert_eq!(ix.resolve("name"), Resolution::Unmapped);
        is_field(
            ix.resolve("employee_count"),
            "number_of_employees",
            Level::Reserved,
        );
        is_field(ix.resolve("industry"), "industry_type_id", Level::Reserved);
        is_field(
            ix.resolve("employees"),
            "number_of_employees",
            Level::Reserved,
        );
        is_field(ix.resolve("phone"), "phone", Level::InternalName);
        is_field(ix.resolve("address.city"), "city", Level::Reserved);
        is_field(ix.resolve("Tier"), "cf_tier", Level::Label);
        assert_eq!(ix.resolve("id"), Resolution::Unmapped);
        assert_eq!(ix.resolve("title"), Resolution::Unmapped);
        assert_eq!(
            Entity::parse(Entity::SalesAccount.as_str()),
            Some(Entity::SalesAccount)
        );
    }

    #[test]
    fn camel_to_snake_cases() {
        assert_eq!(camel_to_snake("cfAlternateNumber"), "cf_alternate_number");
        assert_eq!(camel_to_snake("first_name"), "first_name");
        assert_eq!(camel_to_snake("cfURLValue"), "cf_url_value");
        assert_eq!(camel_to_snake("cfPlan2Tier"), "cf_plan2_tier");
        assert_eq!(camel_to_snake("FirstName"), "first_name");
    }
}
