//! The rules of a service, each broken rule one spanned error.

use std::collections::HashMap;

use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{FnArg, Type};

use crate::ast::{Errors, Service};

/// Names the generated client defines itself.
const RESERVED: &[&str] = &["new", "connect", "client", "clone", "call"];

/// Finds lifetimes and references inside a type.
struct Borrows(Option<proc_macro2::Span>);

impl<'a> Visit<'a> for Borrows {
    fn visit_lifetime(&mut self, l: &'a syn::Lifetime) {
        self.0.get_or_insert(l.span());
    }
    fn visit_type_reference(&mut self, r: &'a syn::TypeReference) {
        self.0.get_or_insert(r.span());
    }
}

fn borrows(ty: &Type) -> Option<proc_macro2::Span> {
    let mut b = Borrows(None);
    b.visit_type(ty);
    b.0
}

/// Finds `impl Trait` inside a type.
struct ImplTrait(Option<proc_macro2::Span>);

impl<'a> Visit<'a> for ImplTrait {
    fn visit_type_impl_trait(&mut self, t: &'a syn::TypeImplTrait) {
        self.0.get_or_insert(t.span());
    }
}

fn impl_trait(ty: &Type) -> Option<proc_macro2::Span> {
    let mut f = ImplTrait(None);
    f.visit_type(ty);
    f.0
}

pub fn check(s: &Service) -> Result<(), syn::Error> {
    let mut errors = Errors::default();
    if !s.item.generics.params.is_empty() {
        errors.push_at(
            s.item.generics.span(),
            "an rpc_service trait cannot be generic",
        );
    }
    if s.name.is_empty() || s.name.contains('.') {
        errors.push_at(
            s.item.ident.span(),
            "the service name must be non-empty and contain no `.`",
        );
    }
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for m in &s.methods {
        let sig = &m.sig;
        if sig.asyncness.is_none() {
            errors.push_at(sig.fn_token.span, "rpc methods must be `async fn`");
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.push_at(
                sig.generics.span(),
                "rpc methods cannot have generics or explicit lifetimes",
            );
        }
        match sig.inputs.first() {
            Some(FnArg::Receiver(r))
                if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() =>
            {
                if let Some((_, Some(l))) = &r.reference {
                    errors.push_at(l.span(), "rpc methods cannot have explicit lifetimes");
                }
            }
            Some(FnArg::Receiver(r)) => {
                errors.push_at(r.span(), "rpc methods take `&self`");
            }
            _ => errors.push_at(
                sig.ident.span(),
                "rpc methods take `&self` as first argument",
            ),
        }
        for a in &m.args {
            if let Some(span) = impl_trait(&a.ty) {
                errors.push_at(
                    span,
                    "rpc arguments must be concrete types: `impl Trait` has no wire form \
                     (name a type, such as `Vec<i64>`)",
                );
                continue;
            }
            if let Some(span) = borrows(&a.ty) {
                errors.push_at(
                    span,
                    "rpc arguments must be owned types: no references or explicit lifetimes",
                );
            }
            if a.ident.to_string().starts_with("__") {
                errors.push_at(
                    a.ident.span(),
                    "argument names starting with `__` are reserved",
                );
            }
        }
        if let Some(span) = impl_trait(&m.output) {
            errors.push_at(
                span,
                "rpc results must be concrete types: `impl Trait` has no wire form",
            );
        } else if let Some(span) = borrows(&m.output) {
            errors.push_at(
                span,
                "rpc results must be owned types: no references or explicit lifetimes",
            );
        }
        if m.has_default {
            errors.push_at(sig.ident.span(), "rpc methods cannot have a default body");
        }
        let ident = m.ident.to_string();
        if RESERVED.contains(&ident.as_str()) || ident.starts_with("__") {
            errors.push_at(
                m.ident.span(),
                format!("`{ident}` is reserved by the generated client; rename the method"),
            );
        }
        if m.wire_name.is_empty() || m.wire_name.contains('.') {
            errors.push_at(
                m.wire_span,
                "a method's wire name must be non-empty and contain no `.`",
            );
        }
        if seen.insert(&m.wire_name, ()).is_some() {
            errors.push_at(
                m.wire_span,
                format!("two methods have the wire name `{}`", m.wire_name),
            );
        }
    }
    errors.finish()
}
