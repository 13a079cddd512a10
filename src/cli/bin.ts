#!/usr/bin/env node
// The `webmoe` executable: run the command line and exit with its status.
import { main } from './main.ts';
import { watchOutput } from './output.ts';

const output = watchOutput();
main(process.argv.slice(2)).then((code) => process.exit(output.exitStatus(code)));
