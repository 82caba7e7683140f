//! Properties of `decide` over random policies, tokens and requests (proptest):
//! the result never exceeds the token ceiling nor the user ceiling; with elevation off anywhere above
//! the target the result stays within the baseline; a destructive action never passes on an
//! unprotected ref; adding an allowlist entry never removes a permission.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use jobgate::classify::{Action, Classified, Family, ProjectRef, Target};
use jobgate::path::ProjectPath;
use jobgate::policy::{decide, Decision, Policy};
use jobgate::scope::{Role, Scope, ScopeSet};
use jobgate::token::claims::Claims;
use proptest::prelude::*;

const PROJECTS: [&str; 5] = ["a/x", "a/y", "a/b/z", "c/w", "c/d/v"];
const GROUPS: [&str; 4] = ["a", "a/b", "c", "c/d"];
const ROLES: [Role; 5] = [Role::Guest, Role::Reporter, Role::Developer, Role::Maintainer, Role::Owner];

fn scopes(bits: u8) -> ScopeSet {
    Scope::ALL.into_iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, s)| s).collect()
}

fn yaml_scopes(bits: u8) -> String {
    format!("[{}]", scopes(bits).iter().map(Scope::name).collect::<Vec<_>>().join(", "))
}

#[derive(Debug, Clone)]
struct EntryGen {
    from: usize,
    scopes: u8,
    protected: bool,
}

#[derive(Debug, Clone)]
struct LevelGen {
    elevation: Option<bool>,
    open: bool,
    entries: Vec<EntryGen>,
}

#[derive(Debug, Clone)]
struct PolicyGen {
    elevation: bool,
    own: u8,
    cross: u8,
    destructive: u8,
    groups: Vec<LevelGen>,
    projects: Vec<LevelGen>,
}

fn entry() -> impl Strategy<Value = EntryGen> {
    (0..PROJECTS.len() + GROUPS.len(), any::<u8>(), any::<bool>()).prop_map(|(from, scopes, protected)| EntryGen {
        from,
        scopes,
        protected,
    })
}

fn level() -> impl Strategy<Value = LevelGen> {
    (proptest::option::of(any::<bool>()), prop::bool::weighted(0.2), prop::collection::vec(entry(), 0..3))
        .prop_map(|(elevation, open, entries)| LevelGen { elevation, open, entries })
}

fn policy_gen() -> impl Strategy<Value = PolicyGen> {
    (
        prop::bool::weighted(0.8),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(level(), GROUPS.len()),
        prop::collection::vec(level(), PROJECTS.len()),
    )
        .prop_map(|(elevation, own, cross, destructive, groups, projects)| PolicyGen {
            elevation,
            own,
            cross,
            destructive,
            groups,
            projects,
        })
}

fn render(p: &PolicyGen) -> String {
    let source = |i: usize| if i < PROJECTS.len() { PROJECTS[i] } else { GROUPS[i - PROJECTS.len()] };
    let level = |l: &LevelGen, project: bool| {
        let mut out = String::new();
        if let Some(e) = l.elevation {
            out.push_str(&format!("    elevation: {e}\n"));
        }
        if project && l.open {
            out.push_str("    inbound: open\n");
        }
        if !l.entries.is_empty() {
            out.push_str("    allow:\n");
            for e in &l.entries {
                let refs = if e.protected { "protected" } else { "any" };
                out.push_str(&format!(
                    "      - {{ from: {}, scopes: {}, refs: {refs} }}\n",
                    source(e.from),
                    yaml_scopes(e.scopes)
                ));
            }
        }
        if out.is_empty() {
            out.push_str("    elevation: true\n");
        }
        out
    };
    let mut text = format!(
        "instance:\n  elevation: {}\n  own_project: {}\n  cross_project: {}\n  destructive_scopes: {}\ngroups:\n",
        p.elevation,
        yaml_scopes(p.own),
        yaml_scopes(p.cross),
        yaml_scopes(p.destructive)
    );
    for (name, l) in GROUPS.iter().zip(&p.groups) {
        text.push_str(&format!("  {name}:\n{}", level(l, false)));
    }
    text.push_str("projects:\n");
    for (name, l) in PROJECTS.iter().zip(&p.projects) {
        text.push_str(&format!("  {name}:\n{}", level(l, true)));
    }
    text
}

#[derive(Debug, Clone)]
struct Case {
    source: usize,
    target: usize,
    needed: usize,
    destructive: bool,
    protected: bool,
    token_scopes: Option<u8>,
    role: Option<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..PROJECTS.len(),
        0..PROJECTS.len(),
        0..8usize,
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(any::<u8>()),
        proptest::option::of(0..5usize),
    )
        .prop_map(|(source, target, needed, destructive, protected, token_scopes, role)| Case {
            source,
            target,
            needed,
            destructive,
            protected,
            token_scopes,
            role,
        })
}

fn claims(c: &Case) -> Claims {
    Claims {
        user_id: Some(1),
        user_access_level: c.role.map(|r| ROLES[r]),
        ref_type: Some("branch".into()),
        ref_protected: c.protected,
        scopes: c.token_scopes.map(scopes),
        ..Claims::job("i", ProjectPath::parse(PROJECTS[c.source]).unwrap(), 1, 1, 2_000_000_000)
    }
}

fn request(c: &Case) -> Classified {
    Classified {
        family: Family::Git,
        target: Target::Project(ProjectRef::Path(ProjectPath::parse(PROJECTS[c.target]).unwrap())),
        action: Action::Read,
        scope: Scope::ALL[c.needed],
        destructive: c.destructive,
    }
}

fn load(p: &PolicyGen) -> Policy {
    let text = render(p);
    Policy::from_yaml(Path::new("gen.yaml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ceilings_bound_the_result(p in policy_gen(), c in case()) {
        let policy = load(&p);
        if let Decision::Allow(permit) = decide(&policy, &request(&c), &claims(&c)) {
            prop_assert!(permit.scopes().contains(Scope::ALL[c.needed]));
            if let Some(bits) = c.token_scopes {
                prop_assert_eq!(permit.scopes().intersect(scopes(bits)), permit.scopes());
            }
            if let (Some(role), true) = (c.role, c.source == c.target) {
                let ceiling = policy.instance.role_ceiling(ROLES[role]);
                prop_assert_eq!(permit.scopes().intersect(ceiling), permit.scopes());
            }
        }
    }

    #[test]
    fn elevation_off_above_the_target_keeps_the_baseline(p in policy_gen(), c in case()) {
        let policy = load(&p);
        let target = ProjectPath::parse(PROJECTS[c.target]).unwrap();
        let group_off = GROUPS.iter().zip(&p.groups).any(|(g, l)| l.elevation == Some(false) && target.is_within(&ProjectPath::parse(g).unwrap()));
        let off = !p.elevation || p.projects[c.target].elevation == Some(false) || group_off;
        if let (true, Decision::Allow(permit)) = (off, decide(&policy, &request(&c), &claims(&c))) {
            let baseline = if c.source == c.target { scopes(p.own) } else { scopes(p.cross) };
            prop_assert_eq!(permit.scopes().intersect(baseline), permit.scopes());
        }
    }

    #[test]
    fn destructive_never_passes_on_an_unprotected_ref(p in policy_gen(), mut c in case()) {
        let policy = load(&p);
        c.protected = false;
        let destructive = c.destructive || scopes(p.destructive).contains(Scope::ALL[c.needed]);
        if destructive {
            prop_assert!(!matches!(decide(&policy, &request(&c), &claims(&c)), Decision::Allow(_)));
        }
    }

    #[test]
    fn adding_an_entry_never_removes_a_permission(p in policy_gen(), c in case(), extra in entry(), at in 0..PROJECTS.len() + GROUPS.len()) {
        let before = decide(&load(&p), &request(&c), &claims(&c));
        let mut more = p.clone();
        if at < PROJECTS.len() {
            more.projects[at].entries.push(extra);
        } else {
            more.groups[at - PROJECTS.len()].entries.push(extra);
        }
        let after = decide(&load(&more), &request(&c), &claims(&c));
        if matches!(before, Decision::Allow(_)) {
            prop_assert!(matches!(after, Decision::Allow(_)), "{:?} became {:?}", before, after);
        }
    }

    #[test]
    fn loading_never_silently_drops_a_definition(p in policy_gen(), again in 0..PROJECTS.len() + GROUPS.len()) {
        // A rendered policy defines every group and project once and loads them all.
        let policy = load(&p);
        prop_assert_eq!((policy.groups.len(), policy.projects.len()), (GROUPS.len(), PROJECTS.len()));
        // Writing one of them a second time (a later copy that would otherwise win) is a load error
        // naming the repeated key and both lines.
        let text = render(&p);
        let (section, name) = if again < PROJECTS.len() { ("projects:\n", PROJECTS[again]) } else { ("groups:\n", GROUPS[again - PROJECTS.len()]) };
        let at = text.find(section).unwrap() + section.len();
        let repeated = format!("{}  {name}:\n    elevation: true\n{}", &text[..at], &text[at..]);
        let err = Policy::from_yaml(Path::new("p.yaml"), &repeated).unwrap_err().to_string();
        prop_assert!(err.contains(&format!("repeated key `{name}`")) && err.contains("(first at line"), "{}", err);
    }

    #[test]
    fn an_empty_condition_never_widens_a_grant(p in policy_gen(), at in 0..PROJECTS.len(), list in prop::sample::select(vec!["ref_names", "environments"])) {
        // Any entry with an empty condition list is refused at load, wherever it stands.
        // (The rendered text ends in its `projects:` section, so this adds a project.)
        let text = format!("{}  zz/empty:\n    allow:\n      - {{ from: {}, scopes: [api], {list}: [] }}\n", render(&p), PROJECTS[at]);
        let loaded = Policy::from_yaml(Path::new("p.yaml"), &text);
        prop_assert!(loaded.as_ref().is_err_and(|e| e.to_string().contains(list)), "{}: {:?}", list, loaded.map(|_| ()));
    }
}
