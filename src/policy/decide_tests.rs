//! Table tests for `decide`: one row per rule of DESIGN.md §4 and per policy reason id.

use std::path::Path;

use super::*;
use crate::classify::{Action, Family};
use crate::scope::Role;

const POLICY: &str = "
instance:
  own_project: [read_repository, read_registry, write_registry, read_package_registry, read_api]
  cross_project: [read_repository, read_registry, read_package_registry]
  destructive_scopes: [api]
projects:
  acme/app:
    id: 42
    allow:
      - from: acme/lib
        scopes: [write_repository]
        refs: protected
      - from: acme/tools
        scopes: [write_package_registry, api]
  acme/open: { inbound: open }
  acme/regulated/core:
    id: 7
    allow:
      - from: acme/lib
        scopes: [write_repository]
  acme/frozen:
    elevation: false
    allow:
      - from: acme/lib
        scopes: [write_repository]
  acme/secret: {}
  acme/narrow:
    own_project: [read_repository]
  tools/deployer:
    allow:
      - from: acme/ci
        scopes: [api]
        ref_names: [main, 'release/*']
        ref_type: branch
      - from: acme/envs
        scopes: [write_package_registry]
        environments: [production, 'eu-*']
      - from: acme/guarded
        scopes: [write_registry]
        environments: protected
    members:
      - { user: ann, role: reporter }
      - { user_id: 9, role: maintainer }
groups:
  acme/regulated: { elevation: false }
  tools:
    allow:
      - from: acme/bots
        scopes: [write_repository]
    members:
      - { user: bob, role: developer }
  audited: { mode: audit }
";

fn policy() -> Policy {
    Policy::from_yaml(Path::new("t.yaml"), POLICY).unwrap()
}

fn claims(project: &str, protected: bool) -> Claims {
    Claims {
        user_id: Some(1),
        ref_protected: protected,
        ..Claims::job("i", ProjectPath::parse(project).unwrap(), 1000, 1, 2_000_000_000)
    }
}

fn on_ref(project: &str, git_ref: &str, ref_type: &str) -> Claims {
    Claims { git_ref: Some(git_ref.into()), ref_type: Some(ref_type.to_owned().into()), ..claims(project, true) }
}

fn in_env(project: &str, environment: Option<&str>, protected: bool) -> Claims {
    Claims { environment: environment.map(Into::into), environment_protected: protected, ..claims(project, true) }
}

fn as_user(project: &str, login: &str, id: u64) -> Claims {
    Claims { user_login: Some(login.into()), user_id: Some(id), ..claims(project, true) }
}

fn request(target: ProjectRef, scope: Scope) -> Classified {
    Classified { family: Family::Git, target: Target::Project(target), action: Action::Read, scope, destructive: false }
}

fn on(path: &str, scope: Scope) -> Classified {
    request(ProjectRef::Path(ProjectPath::parse(path).unwrap()), scope)
}

fn reason(d: Decision) -> Reason {
    d.reason()
}

fn unresolved(target: Target, scope: Scope, action: Action) -> Classified {
    Classified { family: Family::Packages, target, action, scope, destructive: false }
}

#[test]
fn table() {
    use Reason::*;
    use Scope::*;
    let p = policy();
    let tools_reporter = Claims { user_access_level: Some(Role::Reporter), ..claims("acme/tools", true) };
    let narrow = Claims { scopes: Some([ReadRepository].into_iter().collect()), ..claims("acme/lib", true) };
    let rows: Vec<(&str, Claims, Classified, Reason)> = vec![
        ("own project read", claims("acme/app", false), on("acme/app", ReadRepository), Granted),
        ("own project, case-insensitive", claims("Acme/App", false), on("ACME/app", ReadRepository), Granted),
        ("own registry push", claims("acme/app", false), on("acme/app", WriteRegistry), Granted),
        (
            "own repository push is not baseline",
            claims("acme/app", true),
            on("acme/app", WriteRepository),
            ScopeNotGranted,
        ),
        ("cross read admitted", claims("acme/lib", false), on("acme/app", ReadRepository), Granted),
        ("cross read via group entry", claims("acme/tools/sub/x", false), on("acme/app", ReadRepository), Granted),
        ("group prefix is not a group", claims("acme/toolsx", false), on("acme/app", ReadRepository), NotInAllowlist),
        ("cross read not admitted", claims("acme/lib", false), on("acme/secret", ReadRepository), NotInAllowlist),
        ("unknown project not admitted", claims("acme/lib", false), on("other/x", ReadRepository), NotInAllowlist),
        ("open project admits all", claims("zzz/x", false), on("acme/open", ReadRegistry), Granted),
        ("open is read-only", claims("zzz/x", true), on("acme/open", WriteRegistry), ScopeNotGranted),
        ("elevated push on protected ref", claims("acme/lib", true), on("acme/app", WriteRepository), Granted),
        (
            "elevated push on unprotected ref",
            claims("acme/lib", false),
            on("acme/app", WriteRepository),
            RefNotProtected,
        ),
        ("grant without ref condition", claims("acme/tools", false), on("acme/app", WritePackageRegistry), Granted),
        ("destructive scope needs protected ref", claims("acme/tools", false), on("acme/app", Api), RefNotProtected),
        ("destructive scope on protected ref", claims("acme/tools", true), on("acme/app", Api), Granted),
        (
            "group switch disables elevation",
            claims("acme/lib", true),
            on("acme/regulated/core", WriteRepository),
            ElevationDisabled,
        ),
        ("group switch keeps baseline", claims("acme/lib", true), on("acme/regulated/core", ReadRepository), Granted),
        (
            "project switch disables elevation",
            claims("acme/lib", true),
            on("acme/frozen", WriteRepository),
            ElevationDisabled,
        ),
        ("token ceiling", narrow.clone(), on("acme/app", WriteRepository), TokenCeiling),
        ("token ceiling allows what it names", narrow, on("acme/app", ReadRepository), Granted),
        (
            "user ceiling in own project",
            Claims { user_access_level: Some(Role::Reporter), ..claims("acme/app", true) },
            on("acme/app", WriteRegistry),
            UserCeiling,
        ),
        ("user ceiling unknown elsewhere", tools_reporter, on("acme/app", WritePackageRegistry), Granted),
        ("numeric id from policy", claims("acme/lib", false), request(ProjectRef::Id(42), ReadRepository), Granted),
        ("numeric id from token", claims("acme/lib", false), request(ProjectRef::Id(1000), ReadApi), Granted),
        (
            "numeric id unknown",
            claims("acme/lib", false),
            request(ProjectRef::Id(99), ReadRepository),
            UnknownProjectId,
        ),
        ("own project narrowed", claims("acme/narrow", true), on("acme/narrow", WriteRegistry), ScopeNotGranted),
        (
            "own project narrowed keeps the rest",
            claims("acme/narrow", true),
            on("acme/narrow", ReadRepository),
            Granted,
        ),
        ("ref name glob", on_ref("acme/ci", "release/2.0", "branch"), on("tools/deployer", Api), Granted),
        ("ref name glob miss", on_ref("acme/ci", "feature/x", "branch"), on("tools/deployer", Api), ConditionNotMet),
        ("ref type miss", on_ref("acme/ci", "main", "tag"), on("tools/deployer", Api), ConditionNotMet),
        (
            "named environment",
            in_env("acme/envs", Some("eu-west"), false),
            on("tools/deployer", WritePackageRegistry),
            Granted,
        ),
        (
            "named environment miss",
            in_env("acme/envs", Some("staging"), false),
            on("tools/deployer", WritePackageRegistry),
            ConditionNotMet,
        ),
        (
            "no environment",
            in_env("acme/envs", None, false),
            on("tools/deployer", WritePackageRegistry),
            ConditionNotMet,
        ),
        (
            "protected environment",
            in_env("acme/guarded", Some("prod"), true),
            on("tools/deployer", WriteRegistry),
            Granted,
        ),
        (
            "unprotected environment",
            in_env("acme/guarded", Some("prod"), false),
            on("tools/deployer", WriteRegistry),
            ConditionNotMet,
        ),
        ("group entry admits and grants", claims("acme/bots", true), on("tools/deployer", WriteRepository), Granted),
        (
            "group entry reaches subprojects only",
            claims("acme/bots", true),
            on("toolsx/y", ReadRepository),
            NotInAllowlist,
        ),
        (
            "member ceiling from the project",
            as_user("acme/bots", "ann", 1),
            on("tools/deployer", WriteRepository),
            UserCeiling,
        ),
        ("member ceiling from a group", as_user("acme/bots", "Bob", 2), on("tools/deployer", WriteRepository), Granted),
        ("highest membership wins", as_user("acme/bots", "ann", 9), on("tools/deployer", WriteRepository), Granted),
        (
            "group read decided on the own project",
            claims("acme/app", false),
            unresolved(
                Target::Group(ProjectRef::Path(ProjectPath::parse("acme").unwrap())),
                ReadPackageRegistry,
                Action::Read,
            ),
            GrantedViaOwnProject,
        ),
        (
            "instance read without the scope at home",
            claims("acme/narrow", false),
            unresolved(Target::Instance, ReadPackageRegistry, Action::Read),
            ScopeNotGranted,
        ),
        (
            "group write",
            claims("acme/app", true),
            unresolved(Target::Group(ProjectRef::Id(7)), WritePackageRegistry, Action::Write),
            UnresolvedTarget,
        ),
        ("own job record", claims("acme/secret", false), unresolved(Target::OwnJob, ReadApi, Action::Read), Granted),
    ];
    for (name, claims, req, want) in rows {
        assert_eq!(reason(decide(&p, &req, &claims)), want, "{name}");
    }
}

#[test]
fn instance_switch_disables_all_elevation() {
    let text = POLICY.replace("  destructive_scopes: [api]", "  elevation: false");
    let p = Policy::from_yaml(Path::new("t.yaml"), &text).unwrap();
    let d = decide(&p, &on("acme/app", Scope::WriteRepository), &claims("acme/lib", true));
    assert_eq!(reason(d), Reason::ElevationDisabled);
}

#[test]
fn destructive_requests_need_a_protected_ref() {
    let p = policy();
    let mut req = on("acme/app", Scope::WriteRegistry);
    req.destructive = true;
    assert_eq!(reason(decide(&p, &req, &claims("acme/app", false))), Reason::RefNotProtected);
    assert_eq!(reason(decide(&p, &req, &claims("acme/app", true))), Reason::Granted);
}

#[test]
fn permit_carries_the_effective_scopes() {
    let p = policy();
    let c =
        Claims { scopes: Some([Scope::ReadRepository, Scope::Api].into_iter().collect()), ..claims("acme/app", false) };
    let Decision::Allow(permit) = decide(&p, &on("acme/app", Scope::ReadRepository), &c) else { panic!("denied") };
    assert_eq!(permit.scopes().iter().collect::<Vec<_>>(), vec![Scope::ReadRepository]);
}

#[test]
fn audit_mode_at_any_level_records_instead_of_enforcing() {
    let p = policy();
    let denial = |d: Decision| match d {
        Decision::Deny(d) => d,
        Decision::Allow(_) => panic!("allowed"),
    };
    let enforced = denial(decide(&p, &on("acme/secret", Scope::ReadRepository), &claims("acme/lib", true)));
    assert!(enforced.enforced);
    let audited = denial(decide(&p, &on("audited/x", Scope::ReadRepository), &claims("acme/lib", true)));
    assert_eq!((audited.reason, audited.enforced), (Reason::NotInAllowlist, false));
    let text = POLICY.replace("  destructive_scopes: [api]", "  mode: audit");
    let p = Policy::from_yaml(Path::new("t.yaml"), &text).unwrap();
    let audited = denial(decide(&p, &on("acme/secret", Scope::ReadRepository), &claims("acme/lib", true)));
    assert!(!audited.enforced);
}

#[test]
fn a_required_user_ceiling_denies_unknown_roles() {
    let text = POLICY.replace("  destructive_scopes: [api]", "  require_user_ceiling: true");
    let p = Policy::from_yaml(Path::new("t.yaml"), &text).unwrap();
    assert_eq!(
        reason(decide(&p, &on("acme/app", Scope::ReadRepository), &claims("acme/lib", true))),
        Reason::UserRoleUnknown
    );
    let known = as_user("acme/bots", "bob", 2);
    assert_eq!(reason(decide(&p, &on("tools/deployer", Scope::WriteRepository), &known)), Reason::Granted);
    let own = Claims { user_access_level: Some(Role::Developer), ..claims("acme/app", true) };
    assert_eq!(reason(decide(&p, &on("acme/app", Scope::ReadRepository), &own)), Reason::Granted);
}

#[test]
fn every_policy_reason_id_is_reachable() {
    // The policy's closed list: each appears in the table or the tests above.
    let covered = [
        Reason::Granted,
        Reason::NotInAllowlist,
        Reason::ScopeNotGranted,
        Reason::ElevationDisabled,
        Reason::RefNotProtected,
        Reason::ConditionNotMet,
        Reason::UserCeiling,
        Reason::UserRoleUnknown,
        Reason::TokenCeiling,
        Reason::UnknownProjectId,
        Reason::UnresolvedTarget,
        Reason::GrantedViaOwnProject,
    ];
    let source = include_str!("decide_tests.rs");
    for reason in covered {
        let name = format!("{reason:?}");
        assert!(source.matches(&name).count() >= 2, "{name} has no case");
    }
}

#[test]
fn the_trace_narrates_the_derivation() {
    let p = policy();
    let mut trace = Vec::new();
    let d = decide_traced(&p, &on("acme/app", Scope::WriteRepository), &claims("acme/lib", false), &mut trace);
    assert_eq!(reason(d), Reason::RefNotProtected);
    let text = trace.join("\n");
    assert!(text.contains("admission: an allowlist entry names acme/lib"), "{text}");
    assert!(text.contains("projects.acme/app.allow[0]") && text.contains("holds back [write_repository]"), "{text}");
    assert!(text.contains("projects.acme/app.allow[1]") && text.contains("does not match"), "{text}");
    assert_eq!(
        decide(&p, &on("acme/app", Scope::WriteRepository), &claims("acme/lib", false)),
        d,
        "same answer silent"
    );
}

fn policy_of(text: &str) -> Policy {
    Policy::from_yaml(Path::new("t.yaml"), text).unwrap()
}

#[test]
fn a_refusal_names_the_condition_of_an_entry_that_would_grant_the_scope() {
    // The first held-back entry grants read_api only under a ref-name condition; the second would
    // grant write_repository, held back by `refs: protected`. Asked for write_repository from an
    // unprotected `dev` ref, the reason is the second entry's.
    let p = policy_of(
        "projects:\n  acme/app:\n    allow:\n      - { from: acme/lib, scopes: [read_api], ref_names: [main] }\n      - { from: acme/lib, scopes: [write_repository], refs: protected }\n",
    );
    let dev = Claims { git_ref: Some("dev".into()), ..claims("acme/lib", false) };
    assert_eq!(reason(decide(&p, &on("acme/app", Scope::WriteRepository), &dev)), Reason::RefNotProtected);
    let p = policy_of(
        "projects:\n  acme/app:\n    allow:\n      - { from: acme/lib, scopes: [read_api], refs: protected }\n      - { from: acme/lib, scopes: [write_repository], ref_names: [main] }\n",
    );
    assert_eq!(reason(decide(&p, &on("acme/app", Scope::WriteRepository), &dev)), Reason::ConditionNotMet);
}

#[test]
fn the_nearest_mode_written_wins() {
    let denial = |d: Decision| match d {
        Decision::Deny(d) => d.enforced,
        Decision::Allow(_) => panic!("allowed"),
    };
    let text = "groups:\n  acme: { mode: audit }\nprojects:\n  acme/strict: { mode: enforce }\n  acme/loose: {}\n";
    let p = policy_of(text);
    assert!(
        denial(decide(&p, &on("acme/strict", Scope::ReadRepository), &claims("other/x", true))),
        "the project's enforce beats its group's audit"
    );
    assert!(
        !denial(decide(&p, &on("acme/loose", Scope::ReadRepository), &claims("other/x", true))),
        "no mode of its own: the group's audit"
    );
    let p = policy_of("instance:\n  mode: audit\n  own_project: [read_repository]\n  cross_project: []\nprojects:\n  acme/strict: { mode: enforce }\n");
    assert!(
        denial(decide(&p, &on("acme/strict", Scope::ReadRepository), &claims("other/x", true))),
        "and the instance's audit"
    );
}

#[test]
fn without_a_token_role_the_own_projects_members_decide() {
    let p = policy_of("projects:\n  acme/app:\n    members: [ { user: gus, role: guest } ]\n");
    let gus = Claims { user_login: Some("gus".into()), ..claims("acme/app", true) };
    assert_eq!(reason(decide(&p, &on("acme/app", Scope::ReadRepository), &gus)), Reason::UserCeiling);
    let with_token_role = Claims { user_access_level: Some(Role::Developer), ..gus };
    assert_eq!(
        reason(decide(&p, &on("acme/app", Scope::ReadRepository), &with_token_role)),
        Reason::Granted,
        "the token's role wins"
    );
}
