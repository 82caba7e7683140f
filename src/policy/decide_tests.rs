//! Table tests for `decide`: one row per rule of DESIGN.md §4 and per policy reason id.

use std::path::Path;

use super::*;
use crate::classify::{Action, Family};
use crate::policy::scope::Role;

const POLICY: &str = "
instance:
  own_project: [read_repository, read_registry, write_registry, read_package_registry, read_api]
  cross_project: [read_repository, read_registry, read_package_registry]
  destructive_scopes: [api]
groups:
  acme/regulated: { elevation: false }
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
";

fn policy() -> Policy {
    Policy::from_yaml(Path::new("t.yaml"), POLICY).unwrap()
}

fn claims(project: &str, protected: bool) -> Claims {
    Claims {
        iss: "i".into(),
        jti: None,
        exp: 2_000_000_000,
        iat: None,
        project_id: 1000,
        project_path: ProjectPath::parse(project).unwrap(),
        user_id: Some(1),
        user_login: None,
        user_access_level: None,
        pipeline_id: None,
        job_id: 1,
        git_ref: Some("main".into()),
        ref_type: None,
        ref_protected: protected,
        environment: None,
        environment_protected: false,
        scopes: None,
    }
}

fn request(target: ProjectRef, scope: Scope) -> Classified {
    Classified { family: Family::Git, target: Target::Project(target), action: Action::Read, scope, destructive: false }
}

fn on(path: &str, scope: Scope) -> Classified {
    request(ProjectRef::Path(ProjectPath::parse(path).unwrap()), scope)
}

fn reason(d: Decision) -> Reason {
    match d {
        Decision::Allow(_) => Reason::Granted,
        Decision::Deny(d) => d.reason,
    }
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
        ("own repository push is not baseline", claims("acme/app", true), on("acme/app", WriteRepository), ScopeNotGranted),
        ("cross read admitted", claims("acme/lib", false), on("acme/app", ReadRepository), Granted),
        ("cross read via group entry", claims("acme/tools/sub/x", false), on("acme/app", ReadRepository), Granted),
        ("group prefix is not a group", claims("acme/toolsx", false), on("acme/app", ReadRepository), NotInAllowlist),
        ("cross read not admitted", claims("acme/lib", false), on("acme/secret", ReadRepository), NotInAllowlist),
        ("unknown project not admitted", claims("acme/lib", false), on("other/x", ReadRepository), NotInAllowlist),
        ("open project admits all", claims("zzz/x", false), on("acme/open", ReadRegistry), Granted),
        ("open is read-only", claims("zzz/x", true), on("acme/open", WriteRegistry), ScopeNotGranted),
        ("elevated push on protected ref", claims("acme/lib", true), on("acme/app", WriteRepository), Granted),
        ("elevated push on unprotected ref", claims("acme/lib", false), on("acme/app", WriteRepository), RefNotProtected),
        ("grant without ref condition", claims("acme/tools", false), on("acme/app", WritePackageRegistry), Granted),
        ("destructive scope needs protected ref", claims("acme/tools", false), on("acme/app", Api), RefNotProtected),
        ("destructive scope on protected ref", claims("acme/tools", true), on("acme/app", Api), Granted),
        ("group switch disables elevation", claims("acme/lib", true), on("acme/regulated/core", WriteRepository), ElevationDisabled),
        ("group switch keeps baseline", claims("acme/lib", true), on("acme/regulated/core", ReadRepository), Granted),
        ("project switch disables elevation", claims("acme/lib", true), on("acme/frozen", WriteRepository), ElevationDisabled),
        ("token ceiling", narrow.clone(), on("acme/app", WriteRepository), TokenCeiling),
        ("token ceiling allows what it names", narrow, on("acme/app", ReadRepository), Granted),
        ("user ceiling in own project", Claims { user_access_level: Some(Role::Reporter), ..claims("acme/app", true) },
            on("acme/app", WriteRegistry), UserCeiling),
        ("user ceiling unknown elsewhere", tools_reporter, on("acme/app", WritePackageRegistry), Granted),
        ("numeric id from policy", claims("acme/lib", false), request(ProjectRef::Id(42), ReadRepository), Granted),
        ("numeric id from token", claims("acme/lib", false), request(ProjectRef::Id(1000), ReadApi), Granted),
        ("numeric id unknown", claims("acme/lib", false), request(ProjectRef::Id(99), ReadRepository), UnknownProjectId),
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
    let c = Claims { scopes: Some([Scope::ReadRepository, Scope::Api].into_iter().collect()), ..claims("acme/app", false) };
    let Decision::Allow(permit) = decide(&p, &on("acme/app", Scope::ReadRepository), &c) else { panic!("denied") };
    assert_eq!(permit.scopes().iter().collect::<Vec<_>>(), vec![Scope::ReadRepository]);
}
