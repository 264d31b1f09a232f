import { render } from "preact";
import { Api } from "./api";
import { App } from "./app";
import "./style.css";

const root = document.getElementById("app");
if (root) render(<App api={new Api()} />, root);
