use super::*;

fn load(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_yaml(Path::new("p.yaml"), text)
}

#[test]
fn defaults_without_instance_section() {
    let p = load("projects:\n  acme/app: {id: 42}\n").unwrap();
    assert!(p.instance.own_project.contains(Scope::WriteRegistry));
    assert!(!p.instance.cross_project.contains(Scope::WriteRegistry));
    assert_eq!(p.ids.get(&42).map(ProjectPath::as_str), Some("acme/app"));
}

#[test]
fn errors_name_file_and_line() {
    let cases = [
        (
            "projects:\n  acme/app:\n    allow:\n      - from: acme/lib\n        scopes: [root]\n",
            5,
            "unknown variant `root`",
        ),
        ("projects:\n  acme/app:\n    inbund: open\n", 3, "unknown field `inbund`"),
        ("projects:\n  acme/app:\n    allow:\n      - from: acme/../lib\n", 4, "not a project or group path"),
        ("groups:\n  \"acme//x\": {}\n", 2, "not a group path"),
        ("projects:\n  a/b: {id: 1}\n  a/c: {id: 1}\n", 3, "project id 1 is used"),
        (
            "instance:\n  own_project: [read_api]\n  cross_project: []\n  roles: {admin: []}\n",
            4,
            "unknown variant `admin`",
        ),
        ("groups:\n  acme:\n    members:\n      - { user: ann, role: superuser }\n", 4, "unknown variant `superuser`"),
        (
            "groups:\n  acme:\n    members:\n      - { user: ann, user_id: 3, role: owner }\n",
            3,
            "exactly one of user or user_id",
        ),
        (
            "projects:\n  a/b:\n    allow:\n      - from: a/c\n        environments: []\n",
            5,
            "environments lists no name",
        ),
        ("projects:\n  a/b:\n    mode: observe\n", 3, "unknown variant `observe`"),
        (
            "# a/../b here is a comment\nprojects:\n  a/b: {allow: [{from: 'a/../b'}]}\n",
            3,
            "not a project or group path",
        ),
    ];
    for (text, line, message) in cases {
        let err = load(text).unwrap_err();
        assert_eq!(err.line, line, "{err}");
        assert!(err.to_string().contains(message), "{err}");
        assert!(err.to_string().starts_with("p.yaml:"), "{err}");
    }
}

#[test]
fn folder_merge_refuses_double_definitions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "projects:\n  acme/app: {}\n").unwrap();
    std::fs::write(dir.path().join("b.yaml"), "groups: {}\nprojects:\n  Acme/App: {}\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let err = Policy::load_dir(dir.path()).unwrap_err();
    assert!(err.path.ends_with("b.yaml") && err.line == 3, "{err}");
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    assert_eq!(Policy::load_dir(dir.path()).unwrap().files.len(), 1);
}

#[test]
fn nothing_written_twice_in_one_file_silently_replaces_the_first() {
    let group =
        "groups:\n  acme/regulated: { elevation: false }\n  acme/other: {}\n  acme/regulated: { elevation: true }\n";
    let err = load(group).unwrap_err();
    assert!(err.line == 4 && err.message.contains("repeated key `acme/regulated` (first at line 2)"), "{err}");
    let roles =
        "instance:\n  own_project: []\n  cross_project: []\n  roles:\n    reporter: [read_api]\n    reporter: [api]\n";
    let err = load(roles).unwrap_err();
    assert!(err.line == 6 && err.message.contains("repeated key `reporter` (first at line 5)"), "{err}");
    let members = "projects:\n  acme/app:\n    members: [ { user: ann, role: owner }, { user: Ann, role: guest } ]\n";
    assert!(load(members).unwrap_err().message.contains("user \"Ann\" is listed twice"));
    let ids = "projects:\n  acme/app:\n    members: [ { user_id: 7, role: owner }, { user_id: 7, role: guest } ]\n";
    assert!(load(ids).unwrap_err().message.contains("user_id 7 is listed twice"));
}

#[test]
fn an_empty_ref_name_list_is_refused_not_read_as_any_ref() {
    let err = load("projects:\n  acme/app:\n    allow:\n      - { from: acme/lib, scopes: [api], ref_names: [] }\n")
        .unwrap_err();
    assert!(err.message.contains("ref_names lists no name"), "{err}");
}

#[test]
fn allowlists_are_indexed_by_source_and_its_groups() {
    let p = load("projects:\n  t/x:\n    allow:\n      - from: acme\n      - from: acme/lib\n      - from: other\n")
        .unwrap();
    let list = &p.projects[&ProjectPath::parse("t/x").unwrap()].scoped.allow;
    let source = ProjectPath::parse("acme/lib").unwrap();
    let mut froms: Vec<&str> = list.matching(&source).map(|e| e.from.as_str()).collect();
    froms.sort();
    assert_eq!(froms, vec!["acme", "acme/lib"]);
}
