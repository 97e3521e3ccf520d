//! A crate that only links this plugin sees its family in the registry: registration needs no
//! central list.

use lmms_core::Registry;
use lmms_core::registry::Origin;
use lmms_example_static as _;

#[test]
fn linked_plugin_family_is_registered() {
    let registry = Registry::linked().unwrap();
    let family = registry
        .family("example_static_llava")
        .expect("family registered by the plugin crate");
    assert_eq!(
        family.origin,
        Origin::Linked {
            crate_name: "lmms-example-static"
        }
    );
    let m = registry.lookup("example-linear-llava-tiny").unwrap();
    assert_eq!(m.family.descriptor.id, "example_static_llava");
    let cfg = serde_json::json!({"architectures": ["ExampleLinearLlavaForConditionalGeneration"]});
    assert_eq!(
        registry.for_config(&cfg).unwrap().descriptor.id,
        "example_static_llava"
    );
    // Only what is linked is there: no built-in adapter is a dependency of this test.
    assert!(registry.family("llava").is_none());
}
