import { render } from "preact";
import { Api } from "./api";
import { App } from "./app";
import "./style.css";

const root = document.getElementById("app");
// Places are pushed where the browser can listen (every current one can);
// elsewhere the pages poll.
const listen = typeof EventSource === "undefined" ? null : (url: string) => new EventSource(url);
if (root) render(<App api={new Api(undefined, "", listen)} />, root);
