use super::*;

#[test]
fn rfc3339_of_known_times() {
    let cases = [
        (0, "1970-01-01T00:00:00Z"),
        (1_704_067_200, "2024-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (4_294_967_295, "2106-02-07T06:28:15Z"),
        (1_709_251_199, "2024-02-29T23:59:59Z"),
    ];
    for (i, (t, want)) in cases.iter().enumerate() {
        assert_eq!(rfc3339(*t), *want, "case {i}");
    }
}

#[test]
fn verification_code_is_order_free() {
    let a = verification_code(&["b", "a"]);
    assert_eq!(a, verification_code(&["a", "b"]));
    // sha1("ab")
    assert_eq!(a, "da23614e02469a0d7c7bd1bdab5c9c474b1904dc");
}

#[test]
fn names_become_one_uri_segment() {
    assert_eq!(url_safe("web.cpio.gz"), "web.cpio.gz");
    assert_eq!(url_safe("a b/#"), "a%20b%2F%23");
}
