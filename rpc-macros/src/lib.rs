//! `rpc-macros`: the `#[rpc_service]` attribute of zmtp-rpc.
//!
//! Use it through the facade crate (`zmtp_rpc::rpc_service`); generated code names
//! everything through `::zmtp_rpc::__private`, so callers need no other imports.
//!
//! # Layout
//! - `ast.rs`: parse the trait and its `#[rpc_service(...)]` / `#[rpc(...)]` attributes
//!   into a `Service`, collecting every error.
//! - `valid.rs`: the rules a service must follow, each a spanned error.
//! - `expand.rs`: the generated trait, `{Trait}Client`, `{Trait}Server<S>`.
//!
//! On errors the original trait is emitted unchanged beside the errors, so that users see
//! the real mistakes and not a cascade of "trait not found".

#![warn(missing_docs)]

mod ast;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Turns a trait into an RPC service: a typed client `{Trait}Client` and a
/// dispatcher `{Trait}Server<S>` for any `S: Trait`.
///
/// ```text
/// #[zmtp_rpc::rpc_service]
/// pub trait Calc {
///     async fn add(&self, a: i64, b: i64) -> i64;
///     #[rpc(at_most_once)]
///     async fn charge(&self, account: String, cents: u64) -> Result<Receipt, CalcError>;
/// }
/// ```
///
/// Attributes: `#[rpc_service(name = "calc")]` sets the service's wire name (default:
/// the trait name in snake case); `crate = "path"` names the facade crate when it is
/// renamed; `#[rpc(name = "...")]` sets a method's wire name; `#[rpc(at_most_once)]`
/// makes a method resent only when the server provably did not run it. Arguments may
/// carry `#[serde(...)]` attributes (for example `#[serde(default)]` on an argument
/// added later, so that old clients keep working).
#[proc_macro_attribute]
pub fn rpc_service(args: TokenStream, input: TokenStream) -> TokenStream {
    let input2: proc_macro2::TokenStream = input.clone().into();
    match ast::Service::parse(args.into(), input.into()).and_then(|s| {
        valid::check(&s)?;
        Ok(s)
    }) {
        Ok(service) => expand::expand(&service).into(),
        Err(errors) => {
            let errors = errors.to_compile_error();
            let item = fallback(input2);
            quote::quote!(#item #errors).into()
        }
    }
}

/// The trait as the user wrote it, minus what only this macro understands (`#[rpc]`,
/// argument `#[serde]`, argument patterns), so that the compiler adds no errors of
/// its own to ours.
fn fallback(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let Ok(mut item) = syn::parse2::<syn::ItemTrait>(input.clone()) else {
        return input;
    };
    for it in &mut item.items {
        let syn::TraitItem::Fn(f) = it else { continue };
        f.attrs.retain(|a| !a.path().is_ident("rpc"));
        for arg in &mut f.sig.inputs {
            if let syn::FnArg::Typed(pt) = arg {
                pt.attrs.retain(|a| !a.path().is_ident("serde"));
                if !matches!(&*pt.pat, syn::Pat::Ident(_) | syn::Pat::Wild(_)) {
                    *pt.pat = syn::parse_quote!(_);
                }
            }
        }
    }
    quote::ToTokens::into_token_stream(item)
}
