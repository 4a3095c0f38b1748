//! Code generation: the trait (methods as `-> impl Future + Send`), the client and the
//! server. Every path goes through `<facade>::__private` or `::core`/`::std`, so the
//! expansion works under `#![no_implicit_prelude]` and whatever the caller imported.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::{FnArg, TraitItem};

use crate::ast::{Method, Service};

/// A type as the trait spells it, in rustfmt's spacing (`Vec<u8>`, `Result<u32, E>`,
/// `&str`) rather than the token stream's (`Vec < u8 >`).
fn type_text(ty: &syn::Type) -> String {
    let raw = ty.to_token_stream().to_string();
    raw.replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& ", "&")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace("[ ", "[")
        .replace(" ]", "]")
        .replace(" ;", ";")
}

/// One `assert_wire::<T>()` per argument, result and error type, spanned at the type:
/// a type without serde's traits is reported there, in words that say what to add,
/// before the derives of the generated argument structs complain about it. Arguments
/// with their own `#[serde(..)]` attributes (`with = ..`) are left to those.
fn wire_checks(s: &Service, p: &TokenStream) -> TokenStream {
    let mut tys: Vec<&syn::Type> = Vec::new();
    for m in &s.methods {
        tys.extend(
            m.args
                .iter()
                .filter(|a| a.serde_attrs.is_empty())
                .map(|a| &a.ty),
        );
        match &m.result {
            Some((t, e)) => tys.extend([t, e]),
            None => tys.push(&m.output),
        }
    }
    let checks = tys.iter().map(|ty| {
        let span = syn::spanned::Spanned::span(ty);
        quote::quote_spanned!(span=> #p::assert_wire::<#ty>();)
    });
    quote! {
        const _: () = {
            #[allow(dead_code)]
            fn __wire_types() {
                #(#checks)*
            }
        };
    }
}

/// The names every part of the expansion uses.
struct Names<'a> {
    /// `<facade>::__private`.
    p: TokenStream,
    /// The facade's serde, as a path string for `#[serde(crate = ..)]`.
    serde_path: String,
    /// The facade crate's path, as the docs spell it.
    krate_text: String,
    vis: &'a syn::Visibility,
    trait_ident: &'a syn::Ident,
    client_ident: syn::Ident,
    server_ident: syn::Ident,
    service_name: &'a str,
}

impl<'a> Names<'a> {
    fn of(s: &'a Service) -> Names<'a> {
        let krate = &s.krate;
        let trait_ident = &s.item.ident;
        Names {
            p: quote!(#krate::__private),
            serde_path: format!("{}::__private::serde", krate.to_token_stream()),
            krate_text: krate.to_token_stream().to_string().replace(' ', ""),
            vis: &s.item.vis,
            trait_ident,
            client_ident: format_ident!("{}Client", trait_ident),
            server_ident: format_ident!("{}Server", trait_ident),
            service_name: &s.name,
        }
    }
}

/// The whole expansion: the trait, the wire-type checks, the client and the server.
pub fn expand(s: &Service) -> TokenStream {
    let n = Names::of(s);
    let the_trait = expand_trait(s);
    let wire_checks = wire_checks(s, &n.p);
    let client = client(s, &n);
    let server = server(s, &n);
    quote! {
        #the_trait

        #wire_checks

        #client

        #server
    }
}

/// One method's `MethodInfo`: wire name, retry policy, argument names and types, the
/// returned type.
fn method_info(m: &Method, n: &Names<'_>) -> TokenStream {
    let p = &n.p;
    let wire = format!("{}.{}", n.service_name, m.wire_name);
    let retry = if m.at_most_once {
        quote!(#p::RetryPolicy::AtMostOnce)
    } else {
        quote!(#p::RetryPolicy::Retry)
    };
    let args = m.args.iter().map(|a| {
        let name = a.ident.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
        let ty = type_text(&a.ty);
        quote!((#name, #ty))
    });
    let returns = type_text(&m.output);
    quote!(#p::MethodInfo { name: #wire, retry: #retry, args: &[#(#args),*], returns: #returns })
}

/// The client's method for method `i`: its arguments encoded by reference as a map,
/// a `Call` to await.
fn client_method(i: usize, m: &Method, n: &Names<'_>) -> TokenStream {
    let (p, serde_path) = (&n.p, &n.serde_path);
    let ident = &m.ident;
    let docs = &m.docs;
    let names: Vec<_> = m.args.iter().map(|a| &a.ident).collect();
    let tys: Vec<_> = m.args.iter().map(|a| &a.ty).collect();
    let attrs: Vec<_> = m.args.iter().map(|a| &a.serde_attrs).collect();
    let (ret, decode) = returns(m, p);
    let args_struct = if m.args.is_empty() {
        quote! {
            #[derive(#p::serde::Serialize)]
            #[serde(crate = #serde_path)]
            struct __Args {}
            let __args = #p::codec::encode_payload(&__Args {});
        }
    } else {
        quote! {
            #[derive(#p::serde::Serialize)]
            #[serde(crate = #serde_path)]
            struct __Args<'__a> { #( #(#attrs)* #names: &'__a #tys, )* }
            let __args = #p::codec::encode_payload(&__Args { #( #names: &#names ),* });
        }
    };
    quote! {
        #(#docs)*
        pub fn #ident(&self, #( #names: #tys ),*) -> #p::Call<#ret> {
            #args_struct
            #p::Call::new(
                ::core::clone::Clone::clone(&self.client),
                &Self::METHODS[#i],
                __args,
                #decode,
            )
        }
    }
}

/// The server's match arm for one method: decode the arguments (an error status when
/// they do not decode), run the method, encode its result.
fn dispatch_arm(m: &Method, n: &Names<'_>) -> TokenStream {
    let (p, serde_path, trait_ident) = (&n.p, &n.serde_path, n.trait_ident);
    let ident = &m.ident;
    let wire = &m.wire_name;
    let names: Vec<_> = m.args.iter().map(|a| &a.ident).collect();
    let tys: Vec<_> = m.args.iter().map(|a| &a.ty).collect();
    let attrs: Vec<_> = m.args.iter().map(|a| &a.serde_attrs).collect();
    let reply = if m.result.is_some() {
        quote! {
            match __r {
                ::core::result::Result::Ok(__v) => #p::Reply::ok(&__v),
                ::core::result::Result::Err(__e) => #p::Reply::app_error(&__e),
            }
        }
    } else {
        quote!(#p::Reply::ok(&__r))
    };
    quote! {
        #wire => {
            #[derive(#p::serde::Deserialize)]
            #[serde(crate = #serde_path)]
            struct __Args { #( #(#attrs)* #names: #tys, )* }
            let __args: __Args = match #p::Reply::decode_args(&__req.args) {
                ::core::result::Result::Ok(__a) => __a,
                ::core::result::Result::Err(__reply) => {
                    return ::std::boxed::Box::pin(async move { __reply });
                }
            };
            ::std::boxed::Box::pin(async move {
                let __r = #trait_ident::#ident(&*__inner, #( __args.#names ),*).await;
                #reply
            })
        }
    }
}

/// `XClient`: the typed client over a reliable `Client`, one method per trait method.
fn client(s: &Service, n: &Names<'_>) -> TokenStream {
    let Names {
        p,
        vis,
        trait_ident,
        client_ident,
        service_name,
        ..
    } = n;
    let infos = s.methods.iter().map(|m| method_info(m, n));
    let methods = s
        .methods
        .iter()
        .enumerate()
        .map(|(i, m)| client_method(i, m, n));
    let doc = format!(
        "Client of the [`{trait_ident}`] service (`{service_name}`): one async method per \
         trait method, each returning a [`Call`]({}::Call) to `.await`, optionally after \
         `.timeout(..)`. Cheap to clone.",
        n.krate_text
    );
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client_ident {
            client: #p::Client,
        }

        impl #client_ident {
            /// Wire name of the service.
            pub const SERVICE_NAME: &'static str = #service_name;
            /// The service's methods, in declaration order.
            pub const METHODS: &'static [#p::MethodInfo] = &[ #(#infos),* ];

            /// A client over a connected reliable client.
            pub fn new(client: #p::Client) -> Self {
                Self { client }
            }

            /// Connects to a pool of server endpoints with default settings.
            pub async fn connect<__I, __S>(endpoints: __I) -> ::core::result::Result<Self, #p::RpcError>
            where
                __I: ::core::iter::IntoIterator<Item = __S>,
                __S: ::core::convert::Into<::std::string::String>,
            {
                ::core::result::Result::Ok(Self { client: #p::Client::connect(endpoints).await? })
            }

            /// The underlying reliable client (counters, raw requests).
            pub fn client(&self) -> &#p::Client {
                &self.client
            }

            #(#methods)*
        }
    }
}

/// `XServer<S>`: the dispatcher for any implementation `S`, as `Dispatch` and as a
/// `tower::Service`.
fn server(s: &Service, n: &Names<'_>) -> TokenStream {
    let Names {
        p,
        vis,
        trait_ident,
        client_ident,
        server_ident,
        service_name,
        ..
    } = n;
    let arms = s.methods.iter().map(|m| dispatch_arm(m, n));
    let doc = format!(
        "Server-side dispatcher of the [`{trait_ident}`] service for any implementation \
         `S`; add it to a server with `Server::builder().add_service(..)`. Also a \
         `tower::Service` over requests."
    );
    quote! {
        #[doc = #doc]
        #vis struct #server_ident<S> {
            inner: #p::Arc<S>,
        }

        impl<S> ::core::clone::Clone for #server_ident<S> {
            fn clone(&self) -> Self {
                Self { inner: ::core::clone::Clone::clone(&self.inner) }
            }
        }

        impl<S: #trait_ident> #server_ident<S> {
            /// Wraps an implementation.
            pub fn new(service: S) -> Self {
                Self { inner: #p::Arc::new(service) }
            }

            /// Wraps a shared implementation.
            pub fn from_arc(service: #p::Arc<S>) -> Self {
                Self { inner: service }
            }
        }

        impl<S: #trait_ident> #p::Dispatch for #server_ident<S> {
            fn service_name(&self) -> &'static str {
                #service_name
            }

            fn methods(&self) -> &'static [#p::MethodInfo] {
                #client_ident::METHODS
            }

            fn dispatch(&self, __req: #p::ServiceRequest) -> #p::BoxFuture<#p::Reply> {
                let __inner = ::core::clone::Clone::clone(&self.inner);
                match &*__req.method {
                    #(#arms)*
                    __other => {
                        let __m = ::std::format!("unknown method {:?} of service {:?}", __other, #service_name);
                        ::std::boxed::Box::pin(async move {
                            #p::Reply::status(#p::Status::UnknownMethod, __m)
                        })
                    }
                }
            }
        }

        impl<S: #trait_ident> #p::tower::Service<#p::ServiceRequest> for #server_ident<S> {
            type Response = #p::Reply;
            type Error = ::core::convert::Infallible;
            type Future = #p::BoxFuture<::core::result::Result<#p::Reply, ::core::convert::Infallible>>;

            fn poll_ready(
                &mut self,
                _: &mut ::core::task::Context<'_>,
            ) -> ::core::task::Poll<::core::result::Result<(), ::core::convert::Infallible>> {
                ::core::task::Poll::Ready(::core::result::Result::Ok(()))
            }

            fn call(&mut self, req: #p::ServiceRequest) -> Self::Future {
                let __f = #p::Dispatch::dispatch(self, req);
                ::std::boxed::Box::pin(async move { ::core::result::Result::Ok(__f.await) })
            }
        }
    }
}

/// The value type of the generated client method and the reply decoder.
fn returns(m: &Method, p: &TokenStream) -> (TokenStream, TokenStream) {
    match &m.result {
        Some((t, e)) => (
            quote!(::core::result::Result<#t, #e>),
            quote!(#p::decode_result::<#t, #e>),
        ),
        None => {
            let o = &m.output;
            (quote!(#o), quote!(#p::decode_value::<#o>))
        }
    }
}

/// The trait with `Send + Sync + 'static` and methods as `fn -> impl Future + Send`;
/// `#[rpc]` and argument `#[serde]` attributes removed.
fn expand_trait(s: &Service) -> TokenStream {
    let mut item = s.item.clone();
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Send));
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Sync));
    item.supertraits.push(syn::parse_quote!('static));
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    for it in &mut item.items {
        let TraitItem::Fn(f) = it else { continue };
        f.attrs.retain(|a| !a.path().is_ident("rpc"));
        f.sig.asyncness = None;
        for input in &mut f.sig.inputs {
            if let FnArg::Typed(pt) = input {
                pt.attrs.retain(|a| !a.path().is_ident("serde"));
            }
        }
        let output: syn::Type = match &f.sig.output {
            syn::ReturnType::Default => syn::parse_quote!(()),
            syn::ReturnType::Type(_, t) => (**t).clone(),
        };
        f.sig.output = syn::parse_quote!(
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        );
    }
    item.into_token_stream()
}

#[cfg(test)]
mod tests {
    use super::type_text;

    #[test]
    fn types_read_as_the_trait_spells_them() {
        for spelled in [
            "i64",
            "Vec<u8>",
            "Result<Receipt, CalcError>",
            "std::collections::HashMap<String, Vec<Option<u32>>>",
            "(u8, String)",
            "[u8; 16]",
            "::core::option::Option<()>",
        ] {
            let ty: syn::Type = syn::parse_str(spelled).unwrap();
            assert_eq!(type_text(&ty), spelled);
        }
    }
}
