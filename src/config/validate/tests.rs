//! Unit checks of the small parsers the sections share.

use super::machines::parse_mac;
use super::starters::status_range;
use super::*;

#[test]
fn given_status_forms_when_parsed_then_ranges_are_inclusive() {
    assert_eq!(
        status_range(&RawStatus::Code(204)),
        Some(StatusRange { min: 204, max: 204 })
    );
    let range = RawStatus::Range("200-299".to_owned());
    assert_eq!(
        status_range(&range),
        Some(StatusRange { min: 200, max: 299 })
    );
    assert_eq!(status_range(&RawStatus::Range("299-200".to_owned())), None);
    assert_eq!(status_range(&RawStatus::Code(42)), None);
}

#[test]
fn given_mac_forms_when_parsed_then_both_separators_work() {
    assert_eq!(
        parse_mac("aa:bb:cc:dd:ee:ff"),
        Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
    );
    assert_eq!(
        parse_mac("AA-BB-CC-DD-EE-01"),
        Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01])
    );
    assert_eq!(parse_mac("aa:bb:cc"), None);
}

#[test]
fn given_urls_with_address_placeholder_when_checked_then_they_parse() {
    assert!(parse_url("http://{address}:8000/v1").is_ok());
    assert!(parse_url("ftp://x").is_err());
    assert!(parse_url("not a url").is_err());
}
