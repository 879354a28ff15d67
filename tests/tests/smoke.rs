use xnlb_tests::fixture::Fixture;

#[test]
fn verifier_accepts_the_program() {
    let _f = Fixture::new();
}
