// The shop's frame: loads its settings, keeps the language, routes between
// pages (history API; the server answers every page's path with index.html)
// and moves focus to each new page's heading so keyboard and screen-reader
// users land on what changed.
import { createContext, type ComponentChildren } from "preact";
import { useContext, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { Api, ApiError, type Language, type ShopConfig } from "./api";
import { rememberLanguage, rememberedLanguage, t, type MessageKey } from "./i18n";
import { CalendarPage } from "./pages/calendar";
import { DayPage } from "./pages/day";
import { SlotPage } from "./pages/slot";
import { CheckoutPage } from "./pages/checkout";
import { ReturnPage } from "./pages/return";
import { BookingPage } from "./pages/booking";
import { WaitlistPage } from "./pages/waitlist";
import { OfferPage } from "./pages/offer";
import { QueuePage } from "./pages/queue";
import { queueGate } from "./queue";

export interface Shop {
  api: Api;
  config: ShopConfig;
  lang: Language;
  tz: string;
  t: (key: MessageKey, params?: Record<string, string | number>) => string;
  navigate: (path: string, opts?: { replace?: boolean }) => void;
  /** Milliseconds between availability refreshes. */
  pollMs: number;
  /** Leaves the shop for another page (the payment provider's). */
  redirect: (url: string) => void;
  /** The server's clock now (ms): countdowns and deadlines use it, not the device's. */
  now: () => number;
}

export const ShopContext = createContext<Shop | null>(null);

export function useShop(): Shop {
  const shop = useContext(ShopContext);
  if (!shop) throw new Error("useShop outside the shop");
  return shop;
}

/** Set by a navigation inside the app: the next page takes the focus. */
let moveFocus = false;

/** A page's heading: focused after an in-app navigation. */
export function Heading({ children }: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  const shop = useContext(ShopContext);
  // The tab's title names the page too (what a screen reader announces first).
  useEffect(() => {
    const text = ref.current?.textContent?.trim();
    if (text && shop) document.title = `${text} · ${shop.config.museum}`;
  });
  // At mount, before anything the visitor does next can move the focus.
  useLayoutEffect(() => {
    if (moveFocus && ref.current) {
      moveFocus = false;
      ref.current.focus();
    }
  }, []);
  return (
    <h1 ref={ref} tabIndex={-1} id="page-title">
      {children}
    </h1>
  );
}

export function Link(props: { href: string; class?: string; children: ComponentChildren; "aria-label"?: string; "aria-describedby"?: string }) {
  const shop = useShop();
  return (
    <a
      href={props.href}
      class={props.class}
      aria-label={props["aria-label"]}
      aria-describedby={props["aria-describedby"]}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        shop.navigate(props.href);
      }}
    >
      {props.children}
    </a>
  );
}

/** An API failure in words, with the server's own message when it has one. */
export function ErrorText({ error }: { error: unknown }) {
  const { t } = useShop();
  const text =
    error instanceof ApiError && error.code === "network"
      ? t("error_network")
      : t("error_generic", { message: error instanceof Error ? error.message : String(error) });
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

interface Route {
  name: string;
  param: string;
}

export function route(path: string): Route {
  const m = /^\/(day|slot|checkout|return|booking|offer|waitlist|queue)\/([^/]+)\/?$/.exec(path);
  if (m) {
    let param = m[2];
    try {
      param = decodeURIComponent(param);
    } catch {
      // Left as typed: the page reports it as unknown.
    }
    return { name: m[1], param };
  }
  return { name: "calendar", param: "" };
}

/** Sends the visitor on (replacing this page in the history). */
function Redirect({ to }: { to: string }) {
  const shop = useShop();
  useEffect(() => shop.navigate(to, { replace: true }), [to]);
  return null;
}

function Page({ at }: { at: Route }) {
  const shop = useShop();
  switch (at.name) {
    case "day":
      return <DayPage date={at.param} />;
    case "slot": {
      // Choosing tickets on a day of a high-demand sale starts in its line.
      const gate = queueGate(shop.config, at.param.slice(0, 10), shop.now());
      return gate ? <Redirect to={gate} /> : <SlotPage slotId={at.param} />;
    }
    case "queue":
      return <QueuePage room={at.param} />;
    case "checkout":
      return <CheckoutPage holdId={at.param} />;
    case "return":
      return <ReturnPage checkoutId={at.param} />;
    case "booking":
      return <BookingPage token={at.param} />;
    case "offer":
      return <OfferPage token={at.param} />;
    case "waitlist":
      return <WaitlistPage slotId={at.param} />;
    default:
      return <CalendarPage />;
  }
}

export function App({
  api,
  pollMs = 5000,
  redirect = (url) => location.assign(url),
}: {
  api: Api;
  pollMs?: number;
  redirect?: (url: string) => void;
}) {
  const [config, setConfig] = useState<ShopConfig | null>(null);
  const [skew, setSkew] = useState(0);
  const [failure, setFailure] = useState<unknown>(null);
  const [lang, setLang] = useState<Language | null>(rememberedLanguage());
  const [path, setPath] = useState(location.pathname + location.search);

  useEffect(() => {
    let stop = false;
    const sent = Date.now();
    const load = () =>
      api.config().then(
        (c) => {
          if (stop) return;
          // The server read its clock about halfway through the round trip.
          const server = Date.parse(c.now);
          if (Number.isFinite(server)) setSkew(server - (sent + Date.now()) / 2);
          setConfig(c);
          setLang((l) => l ?? c.language);
        },
        (e) => !stop && setFailure(e),
      );
    void load();
    const onPop = () => setPath(location.pathname + location.search);
    addEventListener("popstate", onPop);
    return () => {
      stop = true;
      removeEventListener("popstate", onPop);
    };
  }, [api]);

  const language: Language = lang ?? config?.language ?? "fr";
  // Not before the settings arrive: their own request must carry the
  // browser's Accept-Language, which picks the language in the first place.
  if (config) api.language = language;
  useEffect(() => {
    document.documentElement.lang = language;
  }, [language]);

  const shop = useMemo<Shop | null>(() => {
    if (!config) return null;
    return {
      api,
      config,
      lang: language,
      tz: config.time_zone,
      t: (key, params) => t(language, key, params),
      navigate: (to, opts) => {
        if (opts?.replace) history.replaceState(null, "", to);
        else history.pushState(null, "", to);
        moveFocus = true;
        setPath(to);
        scrollTo?.(0, 0);
      },
      pollMs,
      redirect,
      now: () => Date.now() + skew,
    };
  }, [api, config, language, pollMs, redirect, skew]);

  const at = route(path.split("?")[0]);

  if (!shop) {
    return (
      <main id="main" class="wrap">
        {failure ? (
          <p class="error" role="alert">
            {t(language, "error_network")}
          </p>
        ) : (
          <p>{t(language, "loading")}</p>
        )}
      </main>
    );
  }
  const choose = (l: Language) => {
    rememberLanguage(l);
    setLang(l);
  };
  return (
    <ShopContext.Provider value={shop}>
      <a class="skip" href="#main">
        {shop.t("skip")}
      </a>
      <header class="top">
        <div class="wrap top-row">
          <Link href="/" class="brand">
            {config!.museum}
            <span class="brand-sub"> · {shop.t("tickets")}</span>
          </Link>
          <nav aria-label={shop.t("language")} class="langs">
            {config!.languages.map((l) => (
              <button
                type="button"
                class="lang"
                lang={l}
                aria-pressed={l === language}
                onClick={() => choose(l)}
                key={l}
              >
                {l === "fr" ? "Français" : "English"}
              </button>
            ))}
          </nav>
        </div>
      </header>
      <main id="main" class="wrap" tabIndex={-1}>
        <Page at={at} key={path} />
      </main>
    </ShopContext.Provider>
  );
}
