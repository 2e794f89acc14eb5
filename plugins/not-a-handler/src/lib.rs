//! Test plugin: a well-formed component of some other world. The host must
//! refuse it as not matching `linecook:handler`.

wit_bindgen::generate!({
    inline: "
        package test:other;
        world other {
            export run: func() -> u32;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
