//! Restricted API groups, Triton's `--http-restricted-api` and `--grpc-restricted-protocol`:
//! a group of APIs (model control, say) answers only requests that carry a given header
//! with a given value, so an operator key can guard it while inference stays open or
//! behind the ordinary API keys.
//!
//! ```
//! use nereid_kserve::{ApiGroup, Restrictions};
//!
//! let r: Restrictions = ["model-repository,model-config:admin-key=s3cret"].iter().map(|s| s.parse().unwrap()).collect();
//! assert!(r.check(ApiGroup::ModelRepository, |_| None).is_err());
//! assert!(r.check(ApiGroup::ModelRepository, |h| (h == "admin-key").then_some(&b"s3cret"[..])).is_ok());
//! assert!(r.check(ApiGroup::Inference, |_| None).is_ok());
//! ```

use std::fmt;
use std::str::FromStr;

/// Triton's API groups, by the names its flags use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiGroup {
    /// Server and model liveness and readiness.
    Health,
    /// Server and model metadata.
    Metadata,
    /// Inference, streaming and generation (and the OpenAI routes).
    Inference,
    /// System and CUDA shared memory registration.
    SharedMemory,
    /// Model configuration.
    ModelConfig,
    /// Repository index, load and unload.
    ModelRepository,
    /// Statistics.
    Statistics,
    /// Trace settings.
    Trace,
    /// Log settings.
    Logging,
}

impl ApiGroup {
    /// Every group, with its flag name.
    pub const ALL: [(ApiGroup, &'static str); 9] = [
        (Self::Health, "health"),
        (Self::Metadata, "metadata"),
        (Self::Inference, "inference"),
        (Self::SharedMemory, "shared-memory"),
        (Self::ModelConfig, "model-config"),
        (Self::ModelRepository, "model-repository"),
        (Self::Statistics, "statistics"),
        (Self::Trace, "trace"),
        (Self::Logging, "logging"),
    ];

    /// The flag name ("model-repository").
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(g, _)| *g == self)
            .map(|(_, n)| *n)
            .expect("every group is listed")
    }
}

impl fmt::Display for ApiGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ApiGroup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s.trim())
            .map(|(g, _)| *g)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown API group '{s}' (groups: {})", names.join(", "))
            })
    }
}

/// One `GROUP[,GROUP...]:HEADER=VALUE`.
#[derive(Clone, PartialEq, Eq)]
pub struct Restriction {
    groups: Vec<ApiGroup>,
    /// Lower case, as HTTP/2 and gRPC metadata carry header names.
    header: String,
    value: Vec<u8>,
}

impl fmt::Debug for Restriction {
    // The value is a secret: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restriction")
            .field("groups", &self.groups)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl FromStr for Restriction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let shape = || format!("'{s}' is not GROUP[,GROUP...]:HEADER=VALUE");
        let (groups, pair) = s.split_once(':').ok_or_else(shape)?;
        let (header, value) = pair.split_once('=').ok_or_else(shape)?;
        let header = header.trim().to_ascii_lowercase();
        let valid_name = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name {
            return Err(format!("'{header}' is not a header name"));
        }
        if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(format!(
                "the value of header '{header}' must be printable ASCII, not empty"
            ));
        }
        let groups = groups
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<ApiGroup>, _>>()?;
        Ok(Self {
            groups,
            header,
            value: value.as_bytes().to_vec(),
        })
    }
}

/// Every restriction of a door; a group appears in one at most.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restrictions(Vec<Restriction>);

impl FromIterator<Restriction> for Restrictions {
    fn from_iter<I: IntoIterator<Item = Restriction>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Restrictions {
    /// Checks that no group is restricted twice (Triton refuses that too).
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = Vec::new();
        for group in self.0.iter().flat_map(|r| &r.groups) {
            if seen.contains(group) {
                return Err(format!("API group '{group}' is restricted twice"));
            }
            seen.push(*group);
        }
        Ok(())
    }

    /// Whether any group is restricted.
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether a request to `group` may go on; `header` looks a header up by its
    /// lower-case name. The refusal names the header, never its value; the value is
    /// compared in constant time.
    pub fn check<'a>(
        &self,
        group: ApiGroup,
        header: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<(), String> {
        let Some(r) = self.0.iter().find(|r| r.groups.contains(&group)) else {
            return Ok(());
        };
        let sent = header(&r.header).unwrap_or_default();
        if crate::auth::constant_time_eq(&r.value, sent) {
            Ok(())
        } else {
            Err(format!(
                "This API is restricted, expecting header '{}' (API group '{group}')",
                r.header
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_triton_writes_them_and_bad_ones_say_why() {
        let r: Restriction = "model-repository,statistics:Admin-Key=a=b".parse().unwrap();
        assert_eq!(
            r.groups,
            vec![ApiGroup::ModelRepository, ApiGroup::Statistics]
        );
        assert_eq!(
            (r.header.as_str(), r.value.as_slice()),
            ("admin-key", &b"a=b"[..])
        );
        assert!("inference"
            .parse::<Restriction>()
            .unwrap_err()
            .contains("GROUP"));
        assert!("infer:k=v"
            .parse::<Restriction>()
            .unwrap_err()
            .contains("unknown API group 'infer'"));
        assert!("inference:bad key=v".parse::<Restriction>().is_err());
        assert!("inference:k=".parse::<Restriction>().is_err());
        assert!(
            !format!("{r:?}").contains("a=b"),
            "the secret is never printed"
        );
        let twice: Restrictions = ["inference:a=1", "inference,trace:b=2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(twice.validate().unwrap_err().contains("'inference'"));
    }

    #[test]
    fn only_the_restricted_groups_need_the_header_and_only_its_exact_value() {
        let r: Restrictions = ["model-repository:admin=yes"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let sent = |v: &'static [u8]| move |h: &str| (h == "admin").then_some(v);
        assert!(r.check(ApiGroup::ModelRepository, sent(b"yes")).is_ok());
        let refused = r.check(ApiGroup::ModelRepository, sent(b"no")).unwrap_err();
        assert!(
            refused.contains("'admin'") && !refused.contains("yes"),
            "{refused}"
        );
        assert!(r.check(ApiGroup::ModelRepository, |_| None).is_err());
        assert!(r.check(ApiGroup::Inference, |_| None).is_ok());
    }
}
