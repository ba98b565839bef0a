//! Regions and availability zones as AWS names them.

/// The zone ID of availability zone `az` of `region` (`us-east-1a` → `use1-az1`), as the
/// `az-id` flow-log field and the metadata service's `availability-zone-id` give it.
///
/// AWS maps zone *names* to zone *IDs* per account ("Availability Zone IDs for your AWS
/// resources", RAM User Guide): `us-east-1a` of one account may be `use1-az4` of another.
/// A lab has one account, so vpcd takes the plain mapping (a → az1, b → az2, ...); the
/// ID's region part follows AWS's abbreviation (`use1`, `euw2`, `apne1`, `usgw1`).
pub fn zone_id(region: &str, az: &str) -> String {
    let letter = az.strip_prefix(region).unwrap_or("").chars().next();
    let n = match letter {
        Some(c) if c.is_ascii_lowercase() => u32::from(c) - u32::from('a') + 1,
        _ => return az.to_string(),
    };
    format!("{}-az{n}", region_code(region))
}

/// `us-east-1` → `use1`, `ap-northeast-1` → `apne1`, `us-gov-west-1` → `usgw1`.
pub fn region_code(region: &str) -> String {
    let mut parts: Vec<&str> = region.split('-').collect();
    let number = parts.pop().unwrap_or("");
    let mut code = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            code.push_str(p);
            continue;
        }
        let short = match *p {
            "northeast" => "ne",
            "northwest" => "nw",
            "southeast" => "se",
            "southwest" => "sw",
            other => &other[..other.len().min(1)],
        };
        code.push_str(short);
    }
    code.push_str(number);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_follow_aws_abbreviations() {
        assert_eq!(zone_id("us-east-1", "us-east-1a"), "use1-az1");
        assert_eq!(zone_id("us-west-2", "us-west-2c"), "usw2-az3");
        assert_eq!(zone_id("eu-central-1", "eu-central-1b"), "euc1-az2");
        assert_eq!(zone_id("ap-northeast-1", "ap-northeast-1a"), "apne1-az1");
        assert_eq!(zone_id("ap-southeast-2", "ap-southeast-2b"), "apse2-az2");
        assert_eq!(zone_id("sa-east-1", "sa-east-1a"), "sae1-az1");
        assert_eq!(zone_id("us-gov-west-1", "us-gov-west-1a"), "usgw1-az1");
        assert_eq!(region_code("ca-central-1"), "cac1");
    }
}
