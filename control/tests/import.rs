//! `vpcd import terraform` (issue 23, first slice) on realistic fixtures: a three-tier
//! VPC with a NAT gateway per zone, as the JSON of `terraform show -json` of its state
//! and of its plan. The lab it writes must pass `check` and route as the design does;
//! what it cannot import is listed; bad input is refused naming the file and place.

mod support;

use dataplane::DropReason;
use support::*;

const STATE: &str = include_str!("import/three-tier.state.json");
const PLAN: &str = include_str!("import/three-tier.plan.json");

#[test]
fn a_state_imports_with_its_aws_ids_and_routes_as_the_design_does() {
    let imported = control::import::terraform(STATE, "state.json").unwrap();
    let lab = &imported.lab;
    for want in [
        "  - id: vpc-0a1b2c3d",
        "# from aws_vpc.main",
        "route_table: rtb-aa }   # from aws_subnet.app_a",
        "{ destination: \"0.0.0.0/0\", target: nat-0aaa }   # from aws_route.app_a_default",
        "{ protocol: tcp, port_range: 8080, source: sg-web01 }",
        "public_ip: 198.51.100.5 }   # from aws_nat_gateway.a",
    ] {
        assert!(lab.contains(want), "{want}:\n{lab}");
    }
    assert!(!lab.contains("made up"), "a state has every id:\n{lab}");
    assert_eq!(
        imported.skipped,
        vec![
            "aws_s3_bucket.logs: aws_s3_bucket is not imported yet".to_string(),
            "data.aws_ami.ubuntu: a data source, not a resource of the design".to_string(),
        ]
    );
    let mut l = lab_text(lab);
    // The internet reaches the web tier on 80 at its public IP, not the app tier.
    l.expect_to(
        "inet-1",
        tcp_syn("203.0.113.10", "198.51.100.20", 40000, 80),
        "i-0web",
    );
    // The web tier reaches the app tier on 8080 (sg-app01 admits sg-web01).
    l.expect_to(
        "i-0web",
        tcp_syn("10.0.1.10", "10.0.11.10", 40001, 8080),
        "i-0app",
    );
    // The app tier reaches the internet through its zone's NAT gateway.
    let out = l.expect_to(
        "i-0app",
        udp("10.0.11.10", "203.0.113.10", 40002, 53),
        "inet-1",
    );
    assert_eq!(src_of(&out), ip("198.51.100.5"));
    // Nothing from the web tier on another port.
    l.expect_drop(
        "i-0web",
        tcp_syn("10.0.1.10", "10.0.11.10", 40003, 22),
        DropReason::SgIngress,
    );
    // The database subnet's network ACL admits the app subnet on 5432 only.
    l.expect_to(
        "i-0app",
        tcp_syn("10.0.11.10", "10.0.21.10", 40004, 5432),
        "i-0db",
    );
    let mut l = lab_text(lab);
    l.expect_drop(
        "i-0web",
        tcp_syn("10.0.1.10", "10.0.21.10", 40005, 5432),
        DropReason::NaclIngress,
    );
    assert!(
        lab.contains("egress_only_internet_gateway: eigw-0a1b"),
        "{lab}"
    );
}

#[test]
fn a_plan_imports_with_made_up_ids_flagged_and_the_same_design() {
    let imported = control::import::terraform(PLAN, "plan.json").unwrap();
    let lab = &imported.lab;
    for want in [
        "  - id: vpc-main",
        "# from aws_vpc.main; id made up (known after apply)",
        "{ destination: \"0.0.0.0/0\", target: igw-gw }",
        "{ destination: \"0.0.0.0/0\", target: nat-b }",
        "{ protocol: tcp, port_range: 8080, source: sg-web }",
        "public_ip made up (its Elastic IP is known after apply)",
        "private_ip made up (known after apply)",
    ] {
        assert!(lab.contains(want), "{want}:\n{lab}");
    }
    let mut l = lab_text(lab);
    // The plan's references reach into nested blocks and lists: sg-db admits sg-app,
    // and the ACL covers subnet-db-a.
    l.expect_to(
        "i-app",
        tcp_syn("10.0.11.10", "10.0.21.10", 40004, 5432),
        "i-db",
    );
    assert!(lab.contains("network_acl: acl-db }"), "{lab}");
    l.expect_to(
        "i-web",
        tcp_syn("10.0.1.10", "10.0.11.10", 40001, 8080),
        "i-app",
    );
    let out = l.expect_to(
        "i-app",
        udp("10.0.11.10", "203.0.113.10", 40002, 53),
        "inet-1",
    );
    assert_eq!(src_of(&out), ip("198.51.100.100"));
    // Filled the same way every time.
    assert_eq!(
        control::import::terraform(PLAN, "plan.json").unwrap().lab,
        *lab
    );
}

#[test]
fn bad_input_is_refused_naming_the_file_and_place() {
    let e = control::import::terraform(&STATE[..200], "cut.json").unwrap_err();
    assert!(e.starts_with("cut.json:"), "{e}");
    assert!(e.contains("not the JSON of `terraform show -json`"), "{e}");
    let e = control::import::terraform("{\"resources\": []}", "other.json").unwrap_err();
    assert!(
        e.contains("neither `values` (a state) nor `planned_values` (a plan)"),
        "{e}"
    );
    // A resource of another provider is listed, not imported.
    let mut doc: serde_json::Value = serde_json::from_str(STATE).unwrap();
    let resources = doc["values"]["root_module"]["resources"]
        .as_array_mut()
        .unwrap();
    resources.push(serde_json::json!({
        "address": "google_compute_network.x",
        "mode": "managed",
        "type": "google_compute_network",
        "provider_name": "registry.terraform.io/hashicorp/google",
        "values": { "id": "net-x" }
    }));
    let other = doc.to_string();
    let i = control::import::terraform(&other, "s.json").unwrap();
    assert!(
        i.skipped
            .iter()
            .any(|s| s.contains("provider registry.terraform.io/hashicorp/google is not AWS")),
        "{:?}",
        i.skipped
    );
}

#[test]
fn the_command_writes_a_lab_that_check_accepts() {
    let dir = std::env::temp_dir().join(format!("vpcd-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("lab.yaml");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/import/three-tier.state.json"
    );
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .args(["import", "terraform", fixture, "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("not imported: aws_s3_bucket.logs"), "{err}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .arg("check")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
