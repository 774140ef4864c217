use toml::de::{DeTable, DeValue};
fn dump(v: &toml::Spanned<DeValue>, text: &str, indent: usize) {
    let sp = v.span();
    match v.get_ref() {
        DeValue::Table(t) => {
            println!("{:indent$}table {:?} {:?}", "", sp, &text[sp.clone()], indent = indent);
            for (k, v) in t.iter() {
                println!("{:indent$}key {:?} {:?} {:?}", "", k.get_ref(), k.span(), &text[k.span()], indent = indent + 2);
                dump(v, text, indent + 4);
            }
        }
        DeValue::Array(a) => {
            println!("{:indent$}array {:?} {:?}", "", sp, &text[sp.clone()], indent = indent);
            for v in a.iter() { dump(v, text, indent + 4); }
        }
        DeValue::Integer(i) => println!("{:indent$}int {:?} {} {} {:?}", "", sp, i.as_str(), i.radix(), &text[sp.clone()], indent = indent),
        other => println!("{:indent$}{:?} {:?} {:?}", "", other, sp, &text[sp.clone()], indent = indent),
    }
}
#[test]
fn scratch() {
    for text in [
        "command = [\"a\", 1]\nenv.FOO = \"x\"\n[rlimits]\nnofile = { soft = 1, hard = -0x10 }\n[env]\nBAR = 1979-05-27\n",
        "command = [\"a\", \nkind = \"task\"\nfoo = \nbar = 1\nbar = 2\n[x\n",
        "a = 1_000\nb = +5\nc = 0o755\n\n[[arr]]\nx=1\n",
    ] {
        let (t, errs) = DeTable::parse_recoverable(text);
        println!("=== errs: {:?}", errs.iter().map(|e| (e.span(), e.message().to_string())).collect::<Vec<_>>());
        let sp = t.span();
        let v = toml::Spanned::new(sp, DeValue::Table(t.into_inner()));
        dump(&v, text, 0);
    }
}
