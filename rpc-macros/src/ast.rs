//! Parsing: the trait, its methods, and the attributes, into a [`Service`].

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ItemTrait, LitStr, Pat, ReturnType, TraitItem, Type};

/// A parsed service trait.
pub struct Service {
    pub item: ItemTrait,
    /// Wire name of the service.
    pub name: String,
    /// Path of the facade crate (`::zmtp_rpc` unless renamed).
    pub krate: syn::Path,
    pub methods: Vec<Method>,
}

/// One method.
pub struct Method {
    pub ident: Ident,
    pub wire_name: String,
    pub wire_span: Span,
    pub at_most_once: bool,
    pub docs: Vec<Attribute>,
    pub args: Vec<Arg>,
    /// Declared return type (`()` when none).
    pub output: Type,
    /// `Some((T, E))` when the return type is `Result<T, E>`.
    pub result: Option<(Type, Type)>,
    pub sig: syn::Signature,
    pub has_default: bool,
}

/// One argument.
pub struct Arg {
    pub ident: Ident,
    pub ty: Type,
    /// `#[serde(...)]` attributes, moved onto the argument struct's field.
    pub serde_attrs: Vec<Attribute>,
}

fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Collects errors: one spanned error per mistake.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn push_at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }

    pub fn finish(self) -> Result<(), syn::Error> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// `Some((T, E))` when `ty` is spelled `Result<T, E>` (any path ending in `Result`).
fn result_parts(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(ab) = &last.arguments else {
        return None;
    };
    let mut tys = ab.args.iter().filter_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let (t, e) = (tys.next()?, tys.next()?);
    tys.next().is_none().then_some((t, e))
}

impl Service {
    pub fn parse(args: TokenStream, input: TokenStream) -> Result<Service, syn::Error> {
        let item: ItemTrait = syn::parse2(input)?;
        let mut errors = Errors::default();
        let mut name = snake_case(&item.ident.to_string());
        let mut krate: syn::Path = syn::parse_quote!(::zmtp_rpc);
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                name = meta.value()?.parse::<LitStr>()?.value();
                Ok(())
            } else if meta.path.is_ident("crate") {
                krate = meta.value()?.parse::<LitStr>()?.parse()?;
                Ok(())
            } else {
                Err(meta.error("unknown rpc_service option; expected `name` or `crate`"))
            }
        });
        if let Err(e) = parser.parse2(args) {
            errors.push(e);
        }
        let mut methods = Vec::new();
        for it in &item.items {
            match it {
                TraitItem::Fn(f) => match Method::parse(f) {
                    Ok(m) => methods.push(m),
                    Err(e) => errors.push(e),
                },
                other => errors.push_at(
                    other.span(),
                    "an rpc_service trait may only contain methods",
                ),
            }
        }
        errors.finish()?;
        Ok(Service {
            item,
            name,
            krate,
            methods,
        })
    }
}

impl Method {
    fn parse(f: &syn::TraitItemFn) -> Result<Method, syn::Error> {
        let mut errors = Errors::default();
        // `r#type` is `type` on the wire.
        let mut wire_name = syn::ext::IdentExt::unraw(&f.sig.ident).to_string();
        let mut wire_span = f.sig.ident.span();
        let mut at_most_once = false;
        let mut docs = Vec::new();
        for attr in &f.attrs {
            if attr.path().is_ident("rpc") {
                let r = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("at_most_once") {
                        at_most_once = true;
                        Ok(())
                    } else if meta.path.is_ident("name") {
                        let lit = meta.value()?.parse::<LitStr>()?;
                        wire_name = lit.value();
                        wire_span = lit.span();
                        Ok(())
                    } else {
                        Err(meta.error("unknown rpc option; expected `name` or `at_most_once`"))
                    }
                });
                if let Err(e) = r {
                    errors.push(e);
                }
            } else if attr.path().is_ident("doc") {
                docs.push(attr.clone());
            }
        }
        let mut args = Vec::new();
        for input in &f.sig.inputs {
            let FnArg::Typed(pt) = input else { continue };
            let serde_attrs: Vec<Attribute> = pt
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("serde"))
                .cloned()
                .collect();
            match &*pt.pat {
                Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => args.push(Arg {
                    ident: pi.ident.clone(),
                    ty: (*pt.ty).clone(),
                    serde_attrs,
                }),
                other => errors.push_at(
                    other.span(),
                    "rpc arguments must be plain names, not patterns",
                ),
            }
        }
        let output: Type = match &f.sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, t) => (**t).clone(),
        };
        errors.finish()?;
        Ok(Method {
            ident: f.sig.ident.clone(),
            wire_name,
            wire_span,
            at_most_once,
            docs,
            result: result_parts(&output),
            output,
            args,
            sig: f.sig.clone(),
            has_default: f.default.is_some(),
        })
    }
}
